"""One structured JSON line and metrics per request, ``X-Request-ID`` on every response.

The line holds the route template (never the raw path, which may carry ids), the
status, the duration, the account, the kind of principal and the client's address (the
peer, or the client a trusted proxy names: ``KEYPLANE_TRUSTED_PROXIES``). It never
holds a header value, a body or a query string, so no secret can reach it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane import db, metrics
from keyplane.handlers import context

logger = logging.getLogger("keyplane.requests")
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_ADDRESS_LENGTH = 45  # an IPv6 address with an IPv4 tail (db.models.AuditEvent)


class RequestLog:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, str],
        pool_in_use: Callable[[], int] | None = None,
        proxies_trusted: bool = True,
    ) -> None:
        self.app = app
        self.routes = routes  # resolved operation -> "operationId METHOD /path/{template}"
        self.pool_in_use = pool_in_use
        # Without KEYPLANE_TRUSTED_PROXIES, the first forwarded header is worth a warning:
        # behind a proxy, every client would look like the proxy (and share its limits).
        self._warn_of_a_proxy = not proxies_trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _ACCEPTABLE_ID.match(given) else uuid.uuid4().hex
        facts, token = context.start_facts()
        client = scope.get("client")
        # As the server saw it: the peer, or the client a trusted proxy names; a value
        # longer than any IP address (a proxy's mistake) is not kept.
        address = client[0] if client and len(client[0]) <= MAX_ADDRESS_LENGTH else None
        if self._warn_of_a_proxy and "x-forwarded-for" in headers:
            self._warn_of_a_proxy = False
            logger.warning(
                "a request came with X-Forwarded-For from %s, which is not a trusted proxy: "
                "it was ignored. Behind a reverse proxy, list it in KEYPLANE_TRUSTED_PROXIES, "
                "or every client looks like the proxy",
                address,
            )
        address_token = db.audit.CLIENT_ADDRESS.set(address)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.end_facts(token)
            db.audit.CLIENT_ADDRESS.reset(address_token)
            duration = time.perf_counter() - started
            operation, _, route = self.routes.get(facts.operation_id or "", "").partition(" ")
            metrics.REQUESTS.labels(operation or "unmatched", str(status)).inc()
            metrics.LATENCY.labels(operation or "unmatched").observe(duration)
            if self.pool_in_use is not None:
                metrics.POOL_IN_USE.set(self.pool_in_use())
            logger.info(
                json.dumps(
                    {
                        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route.split(" ", 1)[1] if route else None,
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "account_id": facts.account_id,
                        "principal": facts.principal,
                        "client": address,
                    }
                )
            )
