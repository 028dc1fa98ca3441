"""The request's session, and short transactions apart from it.

The wiring (``keyplane.transactions``) opens a request's session in the thread that
runs its handler and commits or rolls it back there, so no connection is ever held
while the request waits for a thread, a client or another request. Everything below
only ``flush()``es.

``apart`` is the one other way to reach the database: a short transaction of its own,
committed when its block ends whatever the request answers. It is for work that must
not wait on the request's outcome (a login attempt is counted before the password is
checked, and recorded although the answer is a 400), that must not hold the request's
connection (authentication, before the body is read), or that must not take the
request's locks (a key's PATCH reads the key first: one that changes nothing is
answered from that read and never waits on a writer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine, Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from keyplane.db.engine import for_writing


@dataclass(frozen=True)
class Sessions:
    """Where sessions come from: one engine, read-only or (on SQLite) write-locking."""

    reading: sessionmaker[Session]
    writing: sessionmaker[Session]

    @classmethod
    def of(cls, engine: Engine) -> Sessions:
        return cls(
            sessionmaker(engine, expire_on_commit=False),
            sessionmaker(for_writing(engine), expire_on_commit=False),
        )

    def new(self, *, writes: bool) -> Session:
        return (self.writing if writes else self.reading)()


T = TypeVar("T")

_sessions: ContextVar[Sessions] = ContextVar("keyplane_sessions")
_current: ContextVar[Session] = ContextVar("keyplane_db_session")


def use(sessions: Sessions) -> Token[Sessions]:
    """Make ``sessions`` the source of every session in this context (the wiring's job)."""
    return _sessions.set(sessions)


def unuse(token: Token[Sessions]) -> None:
    _sessions.reset(token)


def new(*, writes: bool) -> Session:
    """A session for a unit of work; the caller commits or rolls back and closes it."""
    return _sessions.get().new(writes=writes)


def current() -> Session:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no database session: not inside a unit of work") from None


def bind(session: Session) -> Token[Session]:
    return _current.set(session)


def unbind(token: Token[Session]) -> None:
    _current.reset(token)


@contextmanager
def apart(*, writes: bool) -> Iterator[Session]:
    """A transaction of its own, committed when the block ends (rolled back on an error)."""
    with _sessions.get().new(writes=writes) as session, session.begin():
        yield session


def locked_or_added(session: Session, one: Select[T], new: Callable[[], T]) -> tuple[T, bool]:
    """The row ``one`` selects, locked for update, or ``new()`` added in its place; and
    whether it was added. Of two requests adding the same row at once, one adds it and
    the other (its insert refused by the unique key, inside a savepoint) locks and
    returns that row: each PUT is told truthfully whether it created."""
    found = session.scalar(one.with_for_update())
    if found is not None:
        return found, False
    try:
        with session.begin_nested():
            added = new()
            session.add(added)
        return added, True
    except IntegrityError:
        found = session.scalar(one.with_for_update())
        assert found is not None
        return found, False
