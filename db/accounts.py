"""Accounts (tenants) and memberships."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db import audit, permissions, users
from keyplane.db.audit import Actor
from keyplane.db.errors import Conflict, NotFound
from keyplane.db.models import Account, DisabledBy, Membership, Role, User

MEMBER_NOT_FOUND = "User not found in this account"
LAST_ADMIN = "An account keeps at least one admin: make another member admin first"


def create(session: Session, name: str) -> Account:
    """A new account, with the default permission catalog."""
    account = Account(name=name)
    session.add(account)
    session.flush()
    permissions.seed_default(session, account.id)
    return account


def get(session: Session, account_id: int) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"No account with id {account_id}")
    return account


def any_exist(session: Session) -> bool:
    return bool(session.scalar(select(exists().select_from(Account))))


def add_member(
    session: Session, account_id: int, user_id: int, role: Role, *, actor: Actor, now: datetime
) -> Membership:
    already = select(Membership).where(
        Membership.account_id == account_id, Membership.user_id == user_id
    )
    if session.scalar(select(exists(already))):
        raise Conflict("That user is already a member of this account")
    membership = Membership(account_id=account_id, user_id=user_id, role=role, created_at=now)
    session.add(membership)
    session.flush()
    audit.record(
        session, account_id, actor, "user.added", ("user", user_id), now, {"role": role.value}
    )
    return membership


def memberships_of(session: Session, user_id: int) -> list[tuple[Account, Role]]:
    """The user's accounts with roles, oldest membership first (that is the default account)."""
    rows = session.execute(
        select(Account, Membership.role)
        .join(Membership, Membership.account_id == Account.id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.created_at, Account.id)
    )
    return [(account, role) for account, role in rows]


def every(session: Session) -> list[tuple[Account, int]]:
    """Every account, oldest first, with how many members it has (the operator's view)."""
    members = (
        select(func.count())
        .where(Membership.account_id == Account.id)
        .correlate(Account)
        .scalar_subquery()
    )
    rows = session.execute(select(Account, members).order_by(Account.id))
    return [(account, count) for account, count in rows]


def members(session: Session, account_id: int) -> list[tuple[User, Membership]]:
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.account_id == account_id)
        .order_by(Membership.created_at, User.id)
    )
    return [(user, membership) for user, membership in rows]


def member(session: Session, account_id: int, user_id: int) -> tuple[User, Membership]:
    row = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.account_id == account_id, Membership.user_id == user_id)
    ).one_or_none()
    if row is None:
        raise NotFound(MEMBER_NOT_FOUND)
    return row[0], row[1]


def set_role(
    session: Session, account_id: int, user_id: int, role: Role, *, actor: Actor, now: datetime
) -> tuple[User, Membership]:
    """The last admin cannot step down (nor be stepped down) while no other admin exists."""
    _lock(session, account_id)
    user, membership = member(session, account_id, user_id)
    if membership.role is not role:
        if membership.role is Role.ADMIN:
            _keep_an_admin(session, account_id)
        changed = {"role": {"from": membership.role.value, "to": role.value}}
        audit.record(
            session, account_id, actor, "user.role_changed", ("user", user_id), now, changed
        )
        membership.role = role
        session.flush()
    return user, membership


def remove_member(
    session: Session, account_id: int, user_id: int, *, actor: Actor, now: datetime
) -> int:
    """Out of the account, with every key of theirs in it switched off: how many.

    The keys stay off if the user comes back; an admin may turn each on again.
    """
    _lock(session, account_id)
    db.api_keys.lock_owned(session, account_id, user_id)
    _, membership = member(session, account_id, user_id)
    if membership.role is Role.ADMIN:
        _keep_an_admin(session, account_id)
    session.delete(membership)
    session.flush()
    disabled = db.api_keys.disable_owned(session, account_id, user_id, now, DisabledBy.REMOVAL)
    removed = {"role": membership.role.value, "keys_disabled": disabled}
    audit.record(session, account_id, actor, "user.removed", ("user", user_id), now, removed)
    user = {"id": user_id, "account_id": account_id} | removed
    db.webhooks.emit(
        session, account_id, "user.removed", {"object": user}, about=f"user:{user_id}", now=now
    )
    return disabled


def other_accounts(session: Session, account_id: int, user_id: int) -> int:
    """How many accounts besides this one the user belongs to."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(Membership.user_id == user_id, Membership.account_id != account_id)
        )
        or 0
    )


def _lock(session: Session, account_id: int) -> None:
    """Membership changes of one account, one at a time (PostgreSQL; SQLite's writer lock
    serializes them already), so that two admins cannot both step down at once.

    The caller's own standing is confirmed next, under that lock and before the change:
    an admin stepping down or leaving is judged as the admin who asked."""
    # FOR NO KEY UPDATE: other membership changes wait; key and audit inserts, which
    # key-share the account row for their foreign key, do not.
    locked = select(Account.id).where(Account.id == account_id).with_for_update(key_share=True)
    if session.scalar(locked) is None:
        raise NotFound("Account not found")
    db.authority.confirm(session)


def _keep_an_admin(session: Session, account_id: int) -> None:
    admins = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.account_id == account_id, Membership.role == Role.ADMIN)
    )
    if (admins or 0) <= 1:
        raise Conflict(LAST_ADMIN)


def set_user_active(session: Session, user: User, active: bool, *, now: datetime) -> int:
    """The operator's switch. Deactivating ends the user's tokens and switches off their
    keys in every account; they stay off when the user is activated again. Each of the
    user's accounts has it in its audit trail. Returns how many keys it switched off."""
    if user.is_active == active:
        return 0
    db.api_keys.lock_owned(session, None, user.id)
    disabled = 0
    if not active:
        disabled = db.api_keys.disable_owned(session, None, user.id, now, DisabledBy.DEACTIVATION)
        user.token_generation += 1
    user.is_active = active
    session.flush()
    action = "user.activated" if active else "user.deactivated"
    for account, _ in memberships_of(session, user.id):
        audit.record(session, account.id, audit.OPERATOR, action, ("user", user.id), now)
    return disabled


def create_with_admin(
    session: Session, name: str, username: str, password_hash: str, now: datetime
) -> tuple[Account, User]:
    """An operator's bootstrap (the CLI): a new account and its first admin."""
    account = create(session, name)
    user = users.create(session, username, password_hash)
    add_member(session, account.id, user.id, Role.ADMIN, actor=audit.OPERATOR, now=now)
    return account, user
