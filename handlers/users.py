"""``/v1/users``: the signed-in user, and the members of the current account."""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.errors import Conflict, Forbidden
from keyplane.db.models import Membership, Role, User
from keyplane.db.timefmt import rfc3339
from keyplane.handlers.context import NO_STORE, current_actor, current_principal, runtime

USERS_ONLY = "API keys cannot manage users"


# An answer that carries a token (RFC 6749 §5.1).
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
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    password_hash = runtime().passwords.hash(body["password"])  # before any transaction opens
    session = db.session.current()
    user = db.users.create(session, body["username"], password_hash, account_id=actor.account_id)
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


def change_password(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The current password first, throttled like sign-in; then every older token ends.

    No transaction is open while the passwords are hashed: the user is read apart, and
    the new hash is written only if the password is still the one checked.
    """
    principal = current_principal().require_user(USERS_ONLY)
    current = runtime()
    now = current.now()
    with db.session.apart(writes=False) as session:
        user = db.users.active(session, principal.user_id)
    assert user is not None  # authentication found the user active
    subject = current.secrets.login_subject(user.username)
    db.logins.count_attempt(
        current.sign_in, subject, "Too many wrong passwords; try again later", now
    )
    if not current.passwords.verify(user.password_hash, body["current_password"]):
        with db.session.apart(writes=True) as session:
            db.logins.failed(session, subject, user, now)
        raise Forbidden("Incorrect current password")
    new_hash = current.passwords.hash(body["new_password"])
    generation = db.users.set_password(
        db.session.current(),
        user.id,
        new_hash,
        replacing=user.password_hash,
        actor=principal.audit_actor(),
        action="user.password_changed",
        now=now,
    )
    return (
        db.logins.grant(current.sign_in, current.secrets, user.id, generation, now),
        200,
        NO_STORE,
    )


def reset_password(user_id: int, body: dict[str, Any]) -> tuple[None, int]:
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    if user_id == actor.user_id:
        raise Forbidden("Change your own password with POST /v1/users/me/password")
    with db.session.apart(writes=False) as session:
        db.accounts.member(session, actor.account_id, user_id)  # 404 before any hashing
    new_hash = runtime().passwords.hash(body["new_password"])
    session = db.session.current()
    db.accounts.member(session, actor.account_id, user_id)
    if db.accounts.other_accounts(session, actor.account_id, user_id):
        raise Conflict(
            "This user belongs to other accounts too: only they, or the operator"
            " (keyplane users set-password), can change their password"
        )
    db.users.set_password(
        session,
        user_id,
        new_hash,
        actor=actor.audit_actor,
        action="user.password_reset",
        now=runtime().now(),
    )
    return None, 204


def update(user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    user, membership = db.accounts.set_role(
        db.session.current(),
        actor.account_id,
        user_id,
        Role(body["role"]),
        actor=actor.audit_actor,
        now=runtime().now(),
    )
    return _member(user, membership)


def remove(user_id: int) -> tuple[None, int]:
    actor = current_actor().require_admin(key_message=USERS_ONLY)
    session, now = db.session.current(), runtime().now()
    db.accounts.remove_member(session, actor.account_id, user_id, actor=actor.audit_actor, now=now)
    return None, 204


def _member(user: User, membership: Membership) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": membership.role.value,
        "joined_at": rfc3339(membership.created_at),
    }
