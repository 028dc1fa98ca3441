"""``/v1/api-keys``: the v1 key lifecycle (the v1 contract, around its PATCH)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from keyplane import db
from keyplane.db.access import Actor
from keyplane.db.errors import InvalidInput
from keyplane.db.models import ApiKey, KeyStatus
from keyplane.db.timefmt import parse_rfc3339
from keyplane.handlers.context import current_actor, runtime


def _key_manager(doing: str) -> Actor:
    """Every operation here is for users: an API key never manages keys (403, saying
    what it was refused)."""
    return current_actor().require_user(f"API keys cannot {doing} API keys")


def list(  # noqa: A001 - the operationId is api_keys.list
    status: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    external_id: str | None = None,
) -> dict[str, Any]:
    page = db.api_keys.page(
        db.session.current(),
        _key_manager("list").key_scope(),
        now=runtime().now(),
        status=KeyStatus(status) if status else None,
        cursor=cursor,
        limit=limit,
        external_id=external_id,
    )
    return {"items": [detail(key) for key in page.items], "next_cursor": page.next_cursor}


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = _key_manager("create")
    current = runtime()
    new = db.api_keys.NewKey(
        description=body.get("description"),
        expires_at=parse_rfc3339(body.get("expires_at"), ["body", "expires_at"]),
        permissions=body.get("permissions") or [],
        external_id=body.get("external_id"),
        meta=body.get("meta"),
        enabled=body.get("enabled", True),
        credits=body.get("credits"),
        ratelimits=body.get("ratelimits") or [],
        owner_id=body.get("user_id"),
    )
    session, caller = db.session.current(), actor.key_caller()
    key, full_key = db.api_keys.issue(session, current.secrets, caller, new, current.now())
    return detail(key, full_key=full_key), 201


def get(item_id: int) -> dict[str, Any]:
    return detail(db.api_keys.find(db.session.current(), _key_manager("read").key_scope(), item_id))


def update(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """An omitted field is unchanged; an explicit null clears it."""
    actor = _key_manager("update")
    if "user_id" in body:  # the body is create's, whose user_id names the new key's owner
        raise InvalidInput("A key's owner never changes", ["body", "user_id"])
    changes: dict[str, Any] = {}
    if "description" in body:
        changes["description"] = body["description"]
    if "expires_at" in body:
        changes["expires_at"] = parse_rfc3339(body["expires_at"], ["body", "expires_at"])
    if "permissions" in body:
        changes["permissions"] = body["permissions"] or []
    for field in ("external_id", "meta", "enabled", "credits", "ratelimits"):
        if field in body:
            changes[field] = body[field]
    return read(db.api_keys.change(actor.key_caller(), item_id, changes, runtime().now()))


def revoke(item_id: int) -> dict[str, Any]:
    caller = _key_manager("revoke").key_caller()
    return detail(db.api_keys.revoke(db.session.current(), caller, item_id, runtime().now()))


def rotate(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Owner or admin: a new secret for the same record, the old one kept for a grace."""
    actor = _key_manager("rotate")
    current = runtime()
    key, full_key = db.api_keys.rotate(
        db.session.current(),
        current.secrets,
        actor.key_caller(),
        item_id,
        current.now(),
        grace=timedelta(seconds=body.get("grace_period_seconds", 0)),
        expires_at=(
            parse_rfc3339(body["expires_at"], ["body", "expires_at"])
            if "expires_at" in body
            else db.api_keys.UNSET
        ),
    )
    return detail(key, full_key=full_key)


def read(key: ApiKey, *, full_key: str | None = None) -> dict[str, Any]:
    return db.api_keys.shown_brief(key, runtime().now(), full_key=full_key)


def detail(key: db.api_keys.Shown, *, full_key: str | None = None) -> dict[str, Any]:
    return db.api_keys.shown(key, runtime().now(), full_key=full_key)


def credits(item_id: int, body: dict[str, Any]) -> dict[str, Any]:  # noqa: A001
    """Admins: ``set``, ``increment`` or ``decrement`` a key's credits."""
    caller = _key_manager("change the credits of").key_caller()
    key = db.api_keys.change_credits(
        db.session.current(), caller, item_id, body["op"], body["value"], runtime().now()
    )
    return {"credits": db.api_keys.shown_credits(key, runtime().now())}
