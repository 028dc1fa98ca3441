"""Connexion's side of authentication: the spec's ``x-*InfoFunc`` functions.

Both schemes call one ``authenticate`` that looks at *every* credential header, so a
valid token can never paper over an invalid key in another header (Connexion's OR of
schemes would otherwise take the first that passes). The database work runs in a
worker thread, off the event loop.
"""

from __future__ import annotations

from typing import Any

import connexion
from anyio import to_thread
from connexion.context import context
from starlette.requests import Request

import db.session
from keyplane import access, requestlog, runtime


async def bearer_info(token: str, request: Request) -> dict[str, Any]:
    return await _authenticate(request)


async def api_key_info(api_key: str, request: Request) -> dict[str, Any]:
    return await _authenticate(request)


async def _authenticate(http_request: Request) -> dict[str, Any]:
    headers = http_request.headers
    current = runtime.current()
    principal = await to_thread.run_sync(
        lambda: access.authenticate(
            db.session.current(),
            current.secrets,
            authorization=headers.get("authorization"),
            api_key=headers.get("x-api-key"),
            now=current.now(),
        )
    )
    requestlog.note(principal=principal.kind)
    return {"sub": str(principal.user_id), "principal": principal}


def current_principal() -> access.Principal:
    principal: access.Principal = context["token_info"]["principal"]
    return principal


def current_actor() -> access.Actor:
    """The caller in the account the request acts in (for handlers)."""
    actor = access.resolve_actor(
        db.session.current(), current_principal(), connexion.request.headers.get("x-account-id")
    )
    requestlog.note(account_id=actor.account_id)
    return actor
