"""``/healthz`` and ``/readyz``, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError

import db.migrate
import db.session


def live() -> dict[str, str]:
    return {"status": "ok"}


def ready() -> tuple[dict[str, Any], int]:
    try:
        current = db.migrate.is_current(db.session.current().connection())
    except SQLAlchemyError:
        return {"status": "not ready", "reason": "the database does not answer"}, 503
    if not current:
        return {"status": "not ready", "reason": "the database schema is not current"}, 503
    return {"status": "ready"}, 200
