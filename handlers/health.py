"""``/healthz`` and ``/readyz``, for load balancers and orchestrators.

Served by the data plane, on the event loop: ``/healthz`` answers even when every
worker thread is busy, and ``/readyz`` answers within the request budget even when
the database does not.
"""

from __future__ import annotations

import asyncio
from typing import Any

from anyio import to_thread
from sqlalchemy.exc import SQLAlchemyError

from keyplane import db
from keyplane.db.errors import Unavailable
from keyplane.handlers.context import runtime


async def live() -> dict[str, str]:
    return {"status": "ok"}


async def ready() -> tuple[dict[str, Any], int]:
    """Ready when the database answers, its schema is current and it takes a write, and
    Redis answers where rate limits are counted there."""
    try:
        reason = await asyncio.wait_for(
            to_thread.run_sync(_check, abandon_on_cancel=True),
            # Well within the request's budget: a probe wants an answer, not a hang.
            timeout=runtime().request_timeout_seconds / 2,
        )
    except TimeoutError:
        reason = "the database does not answer in time"
    if reason is not None:
        return {"status": "not ready", "reason": reason}, 503
    return {"status": "ready"}, 200


def _check() -> str | None:
    try:
        with db.session.apart(writes=False) as session:
            current = db.migrate.is_current(session.connection())
    except SQLAlchemyError:
        return "the database does not answer"
    if not current:
        return "the database schema is not current"
    try:
        with db.session.apart(writes=True) as session:
            db.heartbeat.beat(session, runtime().now())
    except SQLAlchemyError:
        return "the database does not take writes"
    try:
        runtime().windows.ping()
    except Unavailable:
        return "Redis does not answer"
    return None
