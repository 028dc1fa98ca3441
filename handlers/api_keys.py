"""``/v1/api-keys``: the v1 key lifecycle (seed 002's contract around PATCH)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import db.api_keys
import db.session
from db.access import Actor
from db.models import ApiKey, KeyStatus
from db.timefmt import parse_rfc3339, rfc3339
from handlers._context import current_actor, runtime


def _key_manager() -> Actor:
    """Every operation here is for users: an API key principal is always 403 (DESIGN §2)."""
    return current_actor().require_user()


def list(  # noqa: A001 - the operationId is api_keys.list
    status: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    external_id: str | None = None,
) -> dict[str, Any]:
    page = db.api_keys.page(
        db.session.current(),
        _key_manager().key_scope(),
        now=runtime().now(),
        status=KeyStatus(status) if status else None,
        cursor=cursor,
        limit=limit,
        external_id=external_id,
    )
    return {"items": [detail(key) for key in page.items], "next_cursor": page.next_cursor}


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = _key_manager()
    current = runtime()
    key, full_key = db.api_keys.issue(
        db.session.current(),
        current.secrets,
        account_id=actor.account_id,
        user_id=actor.user_id,
        description=body.get("description"),
        expires_at=parse_rfc3339(body.get("expires_at"), ["body", "expires_at"]),
        permissions=body.get("permissions") or [],
        actor=actor.audit_actor,
        now=current.now(),
        by_admin=actor.is_admin,
        external_id=body.get("external_id"),
        meta=body.get("meta"),
        enabled=body.get("enabled", True),
    )
    return detail(key, full_key=full_key), 201


def get(item_id: int) -> dict[str, Any]:
    return detail(db.api_keys.find(db.session.current(), _key_manager().key_scope(), item_id))


def update(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """An omitted field is unchanged; an explicit null clears it."""
    actor = _key_manager()
    changes: dict[str, Any] = {}
    if "description" in body:
        changes["description"] = body["description"]
    if "expires_at" in body:
        changes["expires_at"] = parse_rfc3339(body["expires_at"], ["body", "expires_at"])
    if "permissions" in body:
        changes["permissions"] = body["permissions"] or []
    for field in ("external_id", "meta", "enabled"):
        if field in body:
            changes[field] = body[field]
    return read(change(actor, item_id, changes, by_admin=actor.is_admin))


def change(actor: Actor, key_id: int, changes: dict[str, Any], *, by_admin: bool) -> ApiKey:
    """A PATCH on either API. One that changes nothing is answered from a plain read,
    apart from the request's transaction: it takes no lock (nor SQLite's write lock),
    and two such PATCHes never wait on each other or on a writer. It is as if it ran at
    that read; any other PATCH locks the key and writes (``db.api_keys.update``)."""
    scope = actor.key_scope()
    db.api_keys.check_changes(changes)
    with db.session.apart(writes=False) as reading:
        key = db.api_keys.find(reading, scope, key_id)
    if db.api_keys.changes_nothing(key, changes):
        return key
    return db.api_keys.update(
        db.session.current(),
        scope,
        key_id,
        changes,
        actor.audit_actor,
        runtime().now(),
        by_admin=by_admin,
    )


def revoke(item_id: int) -> dict[str, Any]:
    actor = _key_manager()
    key = db.api_keys.revoke(
        db.session.current(), actor.key_scope(), item_id, actor.audit_actor, runtime().now()
    )
    return detail(key)


def rotate(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Owner or admin: a new secret for the same record, the old one kept for a grace."""
    actor = _key_manager()
    current = runtime()
    key, full_key = db.api_keys.rotate(
        db.session.current(),
        current.secrets,
        actor.key_scope(),
        item_id,
        grace=timedelta(seconds=body.get("grace_period_seconds", 0)),
        actor=actor.audit_actor,
        now=current.now(),
        expires_at=(
            parse_rfc3339(body["expires_at"], ["body", "expires_at"])
            if "expires_at" in body
            else db.api_keys.UNSET
        ),
        by_admin=actor.is_admin,
    )
    return detail(key, full_key=full_key)


def read(key: ApiKey, *, full_key: str | None = None) -> dict[str, Any]:
    """``APIKeyRecordRead``, exactly the fields seed 002 documents."""
    return {
        "id": key.id,
        "key_prefix": key.key_prefix,
        "user_id": key.user_id,
        "status": key.status_at(runtime().now()).value,
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "description": key.description,
        "full_key": full_key,
    }


def detail(key: ApiKey, *, full_key: str | None = None) -> dict[str, Any]:
    """``APIKeyRecord``: the seed's fields, the permissions, the last use, and the
    customer's own fields."""
    return read(key, full_key=full_key) | {
        "permissions": key.permissions,
        "last_used_at": rfc3339(key.last_used_at),
        "external_id": key.external_id,
        "meta": key.meta,
        "enabled": key.enabled,
        "disabled_by": None if key.disabled_by is None else key.disabled_by.value,
    }
