"""``/apikeys``: the account console contract, on the same keys and rules as ``/v1``.

Account administrators only; any API key principal is 403 ("API keys cannot update
other API keys"). Errors are ``{"error": ...}`` (``keyplane.problems``).
"""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.access import Actor
from keyplane.db.errors import NotFound
from keyplane.db.models import ApiKey, key_status
from keyplane.db.timefmt import parse_rfc3339, rfc3339
from keyplane.handlers.context import current_actor, runtime

SUCCESS = {"success": True}
ADMINS_ONLY = "Only account administrators can manage API keys"
KEYS_CANNOT = "API keys cannot update other API keys"


def _console_admin() -> Actor:
    return current_actor().require_admin(ADMINS_ONLY, key_message=KEYS_CANNOT)


def list(limit: int = 50, cursor: str | None = None) -> dict[str, Any]:  # noqa: A001
    scope, now = _console_admin().key_scope(), runtime().now()
    page = db.api_keys.page(db.session.current(), scope, now=now, cursor=cursor, limit=limit)
    return {"items": [_shape(key) for key in page.items], "nextCursor": page.next_cursor}


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = _console_admin()
    current = runtime()
    new = db.api_keys.NewKey(
        body["description"], _expiry(body.get("expiresAt")), body["flatPermissionsList"]
    )
    session, caller = db.session.current(), actor.key_caller()
    key, full_key = db.api_keys.issue(session, current.secrets, caller, new, current.now())
    return _shape(key, full_key=full_key), 201


def get(id: str) -> dict[str, Any]:  # noqa: A002 - the console contract names it id
    return _shape(_find(_console_admin(), id))


def update(id: str, body: dict[str, Any]) -> dict[str, bool]:  # noqa: A002
    actor = _console_admin()
    changes: dict[str, Any] = {
        "description": body["description"],
        "permissions": body["flatPermissionsList"],
    }
    if "expiresAt" in body:
        changes["expires_at"] = _expiry(body["expiresAt"])
    db.api_keys.change(actor.key_caller(), _key_id(id), changes, runtime().now())
    return SUCCESS


def revoke(id: str) -> dict[str, bool]:  # noqa: A002
    caller = _console_admin().key_caller()
    db.api_keys.revoke(db.session.current(), caller, _key_id(id), runtime().now())
    return SUCCESS


def _find(actor: Actor, raw_id: str) -> ApiKey:
    return db.api_keys.find(db.session.current(), actor.key_scope(), _key_id(raw_id))


def _key_id(raw_id: str) -> int:
    """A non-numeric id is simply not found, like another account's."""
    digits = len(str(db.pages.MAX_ID))
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > digits:
        raise NotFound(db.api_keys.NOT_FOUND_MESSAGE)
    key_id = int(raw_id)
    if key_id > db.pages.MAX_ID:
        raise NotFound(db.api_keys.NOT_FOUND_MESSAGE)
    return key_id


def _expiry(value: str | None) -> Any:
    """``null`` and ``""`` both mean "never expires" (the console contract)."""
    return parse_rfc3339(value or None, ["body", "expiresAt"])


def _shape(key: db.api_keys.Shown, *, full_key: str | None = None) -> dict[str, Any]:
    return {
        "id": key.id,
        "keyPrefix": key.key_prefix,
        "userId": key.user_id,
        "description": key.description,
        "flatPermissionsList": key.permissions,
        "status": key_status(key, runtime().now()).value,
        "createdAt": rfc3339(key.created_at),
        "expiresAt": rfc3339(key.expires_at),
        "lastUsedAt": rfc3339(key.last_used_at),
        "fullKey": full_key,
    }
