"""Users and their credentials (argon2id hashes only)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.errors import Conflict
from db.models import User


def create(session: Session, username: str, password_hash: str) -> User:
    if by_username(session, username) is not None:
        raise Conflict("Username already taken")
    user = User(username=username, password_hash=password_hash)
    try:
        # A savepoint, so that losing a race for the name leaves the request usable.
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        raise Conflict("Username already taken") from None
    return user


def by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def active(session: Session, user_id: int) -> User | None:
    return session.scalar(select(User).where(User.id == user_id, User.is_active.is_(True)))
