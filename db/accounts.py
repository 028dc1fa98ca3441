"""Accounts (tenants) and memberships."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from db import audit, permissions, users
from db.models import Account, Membership, Role, User


def create(session: Session, name: str) -> Account:
    """A new account, with the default permission catalog."""
    account = Account(name=name)
    session.add(account)
    session.flush()
    permissions.seed_default(session, account.id)
    return account


def any_exist(session: Session) -> bool:
    return bool(session.scalar(select(exists().select_from(Account))))


def add_member(
    session: Session,
    account_id: int,
    user_id: int,
    role: Role,
    *,
    actor: audit.Actor,
    now: datetime,
) -> Membership:
    membership = Membership(account_id=account_id, user_id=user_id, role=role, created_at=now)
    session.add(membership)
    session.flush()
    audit.record(
        session,
        account_id=account_id,
        actor=actor,
        action="user.added",
        target=("user", user_id),
        changes={"role": role.value},
        now=now,
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


def members(session: Session, account_id: int) -> list[tuple[User, Membership]]:
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.account_id == account_id)
        .order_by(Membership.created_at, User.id)
    )
    return [(user, membership) for user, membership in rows]


def create_with_admin(
    session: Session, name: str, username: str, password_hash: str, now: datetime
) -> tuple[Account, User]:
    """An operator's bootstrap (the CLI): a new account and its first admin."""
    account = create(session, name)
    user = users.create(session, username, password_hash)
    add_member(session, account.id, user.id, Role.ADMIN, actor=audit.OPERATOR, now=now)
    return account, user
