"""Connexion's side of authentication: the spec's ``x-*InfoFunc`` functions.

Both schemes call one ``authenticate`` that looks at *every* credential header, so a
valid token can never paper over an invalid key in another header (Connexion's OR of
schemes would otherwise take the first that passes). It reads through the worker's
lookups (``db.lookups``), on the event loop: no thread, no pooled connection held
while the body is read or the handler waits for a thread.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from connexion.security import SECURITY_HANDLERS
from connexion.utils import inspect_function_arguments
from starlette.requests import Request

from keyplane import db
from keyplane.db import crypto
from keyplane.handlers.context import note, runtime


async def bearer_info(token: str, request: Request) -> dict[str, Any]:
    return await _authenticate(request)


async def api_key_info(api_key: str, request: Request) -> dict[str, Any]:
    return await _authenticate(request)


async def _authenticate(http_request: Request) -> dict[str, Any]:
    headers = http_request.headers
    current = runtime()
    principal = await db.access.authenticate(
        current.lookups,
        current.usage,
        current.secrets,
        authorization=headers.get("authorization"),
        api_key=headers.get("x-api-key"),
        now=current.now(),
    )
    note(principal=principal.kind)
    return {"sub": str(principal.user_id), "principal": principal}


def verifier_info(token: str, request: Request) -> dict[str, Any]:
    """Verify's credential is checked by verify itself, in the query that looks up the
    key under test (``db.access.verifying``): here it is only passed on."""
    note(principal="api_key" if token.startswith(crypto.API_KEY_PREFIX) else "user")
    return {"sub": "verifier", "verifier": token, "account": request.headers.get("x-account-id")}


def metrics_token_info(token: str) -> dict[str, Any] | None:
    """``/metrics`` on the API's port is for ``KEYPLANE_METRICS_TOKEN`` only (none: nobody)."""
    current = runtime()
    if not current.metrics_here:
        return {"sub": "metrics"}  # not served here: the handler answers 404
    expected = current.metrics_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return {"sub": "metrics"}
    return None


def leak_reporter_info(token: str) -> dict[str, Any] | None:
    """``POST /v1/leaks`` is for ``KEYPLANE_LEAK_REPORT_TOKEN`` only (none: nobody)."""
    expected = runtime().leak_report_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        note(principal="scanner")
        return {"sub": "scanner"}
    return None


@functools.cache
def _arguments(function: Callable[..., Any]) -> tuple[frozenset[str], bool]:
    names, has_kwargs = inspect_function_arguments(function)
    return frozenset(names), has_kwargs


class _SignatureReadOnce:
    """Connexion 3.3's security handlers read the signature of the spec's function
    (``inspect.signature``) twice on every request, to learn whether it takes
    ``request`` and ``required_scopes``: a fifth of verify's time with a credential.
    The signature never changes, so it is read once per function."""

    @staticmethod
    def _accepts_kwarg(func: Callable[..., Any], keyword: str) -> bool:
        names, has_kwargs = _arguments(func)
        return has_kwargs or keyword in names


# Connexion's handlers for each kind of scheme, with the signature read once.
SECURITY_MAP = {
    kind: type(handler.__name__, (_SignatureReadOnce, handler), {})
    for kind, handler in SECURITY_HANDLERS.items()
}
