"""``/v1/identities``: customers by the account's own id for them (``db.identities``)."""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.access import Actor
from keyplane.db.timefmt import rfc3339
from keyplane.handlers.context import current_actor, runtime

USERS_ONLY = "API keys cannot manage identities"


def _reader() -> Actor:
    return current_actor().require_user(USERS_ONLY)


def _admin() -> Actor:
    return current_actor().require_admin(key_message=USERS_ONLY)


def list(limit: int = 20, cursor: str | None = None) -> dict[str, Any]:  # noqa: A001
    page = db.identities.page(
        db.session.current(), _reader().account_id, cursor=cursor, limit=limit
    )
    return {"items": [_shape(i) for i in page.items], "next_cursor": page.next_cursor}


def get(external_id: str) -> dict[str, Any]:
    return _shape(db.identities.get(db.session.current(), _reader().account_id, external_id))


def put(external_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = _admin()
    identity, created = db.identities.put(
        db.session.current(),
        actor.account_id,
        external_id,
        body,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _shape(identity), 201 if created else 200


def update(external_id: str, body: dict[str, Any]) -> dict[str, Any]:
    actor = _admin()
    identity = db.identities.update(
        db.session.current(),
        actor.account_id,
        external_id,
        body,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _shape(identity)


def delete(external_id: str) -> tuple[None, int]:
    actor = _admin()
    session, now = db.session.current(), runtime().now()
    db.identities.delete(session, actor.account_id, external_id, actor=actor.audit_actor, now=now)
    return None, 204


def _shape(identity: Any) -> dict[str, Any]:
    return db.identities.shown(identity, runtime().now()) | {
        "created_at": rfc3339(identity.created_at),
        "updated_at": rfc3339(identity.updated_at),
    }
