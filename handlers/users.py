"""``/v1/users``: the signed-in user, and the members of the current account."""

from __future__ import annotations

from typing import Any

import db.accounts
import db.session
import db.users
from db.models import Membership, Role, User
from db.timefmt import rfc3339
from handlers._context import current_actor, current_principal, runtime

USERS_ONLY = "API keys cannot manage users"


def me() -> dict[str, Any]:
    principal = current_principal().require_user(USERS_ONLY)
    session = db.session.current()
    user = db.users.active(session, principal.user_id)
    assert user is not None  # authentication checked it in this transaction
    accounts = db.accounts.memberships_of(session, user.id)
    return {
        "id": user.id,
        "username": user.username,
        "accounts": [{"id": a.id, "name": a.name, "role": role.value} for a, role in accounts],
    }


def list() -> dict[str, Any]:  # noqa: A001 - the operationId is users.list
    actor = current_actor().require_user(USERS_ONLY)
    members = db.accounts.members(db.session.current(), actor.account_id)
    return {"items": [_member(user, membership) for user, membership in members]}


def create(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    actor = current_actor().require_admin()
    password_hash = runtime().passwords.hash(body["password"])  # before any transaction opens
    session = db.session.current()
    user = db.users.create(session, body["username"], password_hash)
    role = Role(body.get("role", Role.MEMBER))
    membership = db.accounts.add_member(
        session,
        actor.account_id,
        user.id,
        role,
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _member(user, membership), 201


def _member(user: User, membership: Membership) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": membership.role.value,
        "joined_at": rfc3339(membership.created_at),
    }
