"""Limits every request meets before any work is done, and headers every answer carries.

* A path and query longer than 2048 bytes are a 414.
* A body larger than ``KEYPLANE_MAX_BODY_BYTES`` (64 KiB) is a 413: at once when
  ``Content-Length`` says so, else as soon as the bytes received pass the limit; the
  rest is never read.
* A body must arrive within ``KEYPLANE_BODY_TIMEOUT_SECONDS`` (10) of the request's
  start, or the answer is a 408: a client cannot hold a connection by trickling.
* A body without ``Content-Type`` is a 415; media types are compared without regard
  to case (RFC 9110 §8.3.1); ``application/*+json`` is JSON, and JSON is read as UTF-8
  whatever charset the type names (RFC 8259 §8.1).
* Every answer says ``X-Content-Type-Options: nosniff``; every API answer says
  ``Cache-Control: no-store`` (some carry secrets: a full key, a token).
* Swagger UI's pages (``/ui``) and the documentation site (``/docs``) say
  ``X-Frame-Options: DENY`` and carry a ``Content-Security-Policy`` that allows the
  page's own files, its own inline scripts (by their SHA-256, read from the page as
  served) and requests to this origin only (``DocsPages``).

Errors are raised as types (``db.errors``) where Connexion's error handlers shape them
per surface; before Connexion is reached, they are shaped here the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.db.errors import KeyplaneError

# No id or parameter of the API comes close; Python could not even parse a longer number.
MAX_URL_BYTES = 2048

# Paths whose answers may be cached: the spec and Swagger UI's static files.
_CACHEABLE = ("/openapi.json", "/ui", "/docs")
_STRUCTURED_JSON = re.compile(r"application/[a-z0-9.!#$&^_-]+\+json")
DOCS_PAGES = ("/ui", "/docs")  # Swagger UI, and the documentation site
# After these, the rest of the request (an unread body) could be taken for the next
# one: the connection ends with the answer.
_CLOSE_AFTER = {408, 413}


class Refused(KeyplaneError):
    """A request refused before any work (408, 413, 414, 415), shaped per surface like
    every error (``keyplane.problems``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Guards:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout_seconds: float,
        shape: Callable[[str, KeyplaneError], tuple[bytes, list[tuple[bytes, bytes]]]],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        self.shape = shape  # (path, error) -> the error's body and headers, per surface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        refusal = self._refusal(scope)
        if refusal is not None:
            await self._answer(send, path, refusal)
            return
        cacheable = path.startswith(_CACHEABLE)

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if not cacheable:
                    headers["Cache-Control"] = "no-store"
                if message["status"] in _CLOSE_AFTER:
                    headers["Connection"] = "close"
            await send(message)

        receive = self._limited(receive)
        if "transfer-encoding" in Headers(scope=scope):
            # Connexion reads a body by its Content-Length: a chunked one is gathered here
            # (within the same limits) and handed on with its length.
            try:
                receive = await self._gathered(scope, receive)
            except KeyplaneError as error:  # too big, or too slow
                await self._answer(send, path, error)
                return
        await self.app(scope, receive, send_guarded)

    def _refusal(self, scope: Scope) -> KeyplaneError | None:
        if len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) > MAX_URL_BYTES:
            return Refused(414, f"The path and query are longer than {MAX_URL_BYTES} bytes")
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return self._too_large()
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        content_type = headers.get("content-type")
        if content_type is None:
            return Refused(415, "A body needs a Content-Type") if has_body else None
        media_type, _, parameters = content_type.partition(";")
        media_type = media_type.strip().lower()
        if media_type == "application/json" or _STRUCTURED_JSON.fullmatch(media_type):
            # JSON is UTF-8 whatever a charset says (RFC 8259 §8.1), and a +json type is
            # JSON (RFC 6839), as FastAPI reads both.
            normalized = "application/json"
        else:
            # Connexion matches media types as written: give it their one true (lower) case.
            normalized = media_type + (";" + parameters if parameters else "")
        MutableHeaders(scope=scope)["content-type"] = normalized
        return None

    def _too_large(self) -> Refused:
        return Refused(413, f"The request body is larger than {self.max_body_bytes} bytes")

    def _limited(self, receive: Receive) -> Receive:
        received, complete = 0, False
        deadline = time.monotonic() + self.body_timeout_seconds

        async def receive_limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()  # after the body, only a disconnect can come
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    message = await receive()
            except TimeoutError:
                raise Refused(
                    408,
                    f"The request body did not arrive within {self.body_timeout_seconds:g} seconds",
                ) from None
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise self._too_large()
            complete = not message.get("more_body", False)
            return message

        return receive_limited

    @staticmethod
    async def _gathered(scope: Scope, receive: Receive) -> Receive:
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = MutableHeaders(scope=scope)
        del headers["transfer-encoding"]
        headers["content-length"] = str(len(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _answer(self, send: Send, path: str, error: KeyplaneError) -> None:
        body, headers = self.shape(path, error)
        headers = [
            *headers,
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
            *([(b"connection", b"close")] if error.status in _CLOSE_AFTER else []),
        ]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class DocsPages:
    """Swagger UI's and the docs site's answers, framed by no one and allowed no script
    but their own.

    The policy is built from the HTML page itself: each inline ``<script>`` is allowed
    by the SHA-256 of exactly what is served, so nothing injected into a page could
    run. Styles may be inline (Swagger UI sets them on its elements); images may be
    ``data:`` URLs (its icons). Requests go to this origin only ("Try it out").
    """

    # A script element without ``src``: its text is the script (``type`` and ``id`` may
    # be given; JSON data blocks are hashed too, which allows nothing more).
    _INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)
    _POLICY = (
        "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(DOCS_PAGES):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_policy(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Frame-Options"] = "DENY"
                if not headers.get("content-type", "").startswith("text/html"):
                    headers["Content-Security-Policy"] = self._POLICY.format(hashes="")
                    await send(message)
                    return
                start = message  # held until the page is whole: its scripts are hashed
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            page = b"".join(chunks)
            MutableHeaders(scope=start)["Content-Security-Policy"] = self._POLICY.format(
                hashes="".join(
                    f" '{_sha256(script)}'" for script in self._INLINE_SCRIPT.findall(page)
                )
            )
            await send(start)
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, send_with_policy)


def _sha256(content: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode()
