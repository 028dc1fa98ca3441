"""Users and their credentials (argon2id hashes only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db import usernames
from keyplane.db.errors import Conflict, InvalidInput, NotFound
from keyplane.db.models import Membership, User


def create(
    session: Session, username: str, password_hash: str, *, account_id: int | None = None
) -> User:
    """A new user, named in ``account_id`` (by its admin) or service-wide (by the
    operator); refused (409) if the name, or one it looks like, is taken there."""
    if account_id is None and usernames.is_account_name(username):
        raise InvalidInput(
            "A service-wide username cannot end in @ and digits: accounts name their users so",
            ["body", "username"],
        )
    name = username if account_id is None else usernames.in_account(username, account_id)
    key, lookalike = usernames.sign_in_key(name), usernames.lookalike_key(name)
    taken = session.execute(
        select(User.username, User.username_key).where(User.lookalike_key == lookalike)
    ).one_or_none()
    where = "" if account_id is None else " in this account"
    if taken is not None:
        if taken.username_key == key:
            raise Conflict(f"Username already taken{where}")
        raise Conflict(f"Username looks like {taken.username!r}, already taken{where}")
    user = User(
        username=name, username_key=key, lookalike_key=lookalike, password_hash=password_hash
    )
    try:
        # A savepoint, so that losing a race for the name leaves the request usable.
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise Conflict(f"Username already taken{where}") from None
    return user


def by_username(session: Session, username: str) -> User | None:
    """The user signing in as ``username``: by the exact name, else by its sign-in key."""
    exact = session.scalar(select(User).where(User.username == username))
    if exact is not None:
        return exact
    return session.scalar(select(User).where(User.username_key == usernames.sign_in_key(username)))


def active(session: Session, user_id: int) -> User | None:
    return session.scalar(select(User).where(User.id == user_id, User.is_active.is_(True)))


def is_active_member(session: Session, account_id: int, user_id: int) -> bool:
    """Whether the user is active and in the account, and stays so until the transaction
    ends: the rows are share-locked, so a removal or deactivation waits for it (and one
    that came first is seen). A key switched on, or made, for its owner therefore
    never outlives the owner's removal (``db.accounts.remove_member``)."""
    return (
        session.scalar(
            select(User.id)
            .join(Membership, Membership.user_id == User.id)
            .where(
                User.id == user_id, User.is_active.is_(True), Membership.account_id == account_id
            )
            .with_for_update(read=True)
        )
        is not None
    )


def set_password(
    session: Session,
    user_id: int,
    password_hash: str,
    *,
    replacing: str | None = None,
    actor: db.audit.Actor,
    action: str,
    now: datetime,
) -> int:
    """A new password; every token issued before stops working. The new token generation.

    ``replacing``: the hash the caller checked the current password against. If the
    password changed meanwhile, nothing is written (409): one of two concurrent changes
    wins, and the loser learns it. Such a change is the caller's own: their standing is
    confirmed first, with their row locked for the update.
    """
    condition = User.id == user_id
    if replacing is not None:
        db.authority.confirm(session, own_row_for_update=True)
        condition = condition & (User.password_hash == replacing)
    generation = session.scalar(
        update(User)
        .where(condition)
        .values(password_hash=password_hash, token_generation=User.token_generation + 1)
        .returning(User.token_generation)
    )
    if generation is None:
        if replacing is not None:
            raise Conflict("The password was changed meanwhile; sign in again")
        raise NotFound("User not found")
    # In each of the user's accounts: every admin who might wonder sees it.
    accounts = session.scalars(select(Membership.account_id).where(Membership.user_id == user_id))
    for account_id in accounts.all():
        db.audit.record(session, account_id, actor, action, ("user", user_id), now)
    return int(generation)
