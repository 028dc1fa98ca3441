"""``/v1/permissions``: the account's permission catalog."""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.models import Permission
from keyplane.db.timefmt import rfc3339
from keyplane.handlers.context import current_actor, runtime

USERS_ONLY = "API keys cannot manage permissions"


def list() -> dict[str, Any]:  # noqa: A001 - the operationId is permissions.list
    actor = current_actor().require_user(USERS_ONLY)
    return {
        "items": [_shape(p) for p in db.permissions.catalog(db.session.current(), actor.account_id)]
    }


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    permission = db.permissions.add(
        db.session.current(),
        actor.account_id,
        body["id"],
        body.get("description", ""),
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _shape(permission), 201


def delete(permission_id: str) -> tuple[None, int]:
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    session, now = db.session.current(), runtime().now()
    db.permissions.remove(
        session, actor.account_id, permission_id, actor=actor.audit_actor, now=now
    )
    return None, 204


def _shape(permission: Permission) -> dict[str, Any]:
    return {
        "id": permission.id,
        "description": permission.description,
        "created_at": rfc3339(permission.created_at),
    }
