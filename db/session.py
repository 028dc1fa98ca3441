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
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine, Executable, Row, Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from keyplane.db.engine import for_writing


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Sessions:
    """Where sessions come from: one engine, read-only or (on SQLite) write-locking."""

    reading: sessionmaker[Session]
    writing: sessionmaker[Session]
    # Where one statement may commit by itself (``by_itself``): PostgreSQL, reached
    # directly. Not SQLite (a change there takes more than one statement), and not
    # through a transaction pooler (its timeouts are set per transaction).
    autocommit: Engine | None = None
    # The wiring's say on whether the request may still commit (``keyplane.deadline``).
    may_commit: Callable[[], bool] = _always

    @classmethod
    def of(
        cls,
        engine: Engine,
        *,
        may_commit: Callable[[], bool] = _always,
        transaction_pooler: bool = False,
    ) -> Sessions:
        alone = engine.dialect.name == "postgresql" and not transaction_pooler
        return cls(
            sessionmaker(engine, expire_on_commit=False),
            sessionmaker(for_writing(engine), expire_on_commit=False),
            engine.execution_options(isolation_level="AUTOCOMMIT") if alone else None,
            may_commit,
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


def by_itself(
    statement: Executable, parameters: dict[str, Any] | None = None
) -> Row[Any] | Literal[False] | None:
    """``statement``'s one row (None: no row), the statement committed by itself on a
    connection of its own: every lock it takes ends with it, and none is held while
    Python runs, waiting for the interpreter among the worker's other threads. False,
    with nothing run, where that cannot be (``Sessions.autocommit``) or the request
    may no longer commit: the caller then does the work in the request's transaction.
    It claims the request's commit first, as the request's own commit would."""
    sessions = _sessions.get()
    if sessions.autocommit is None or not sessions.may_commit():
        return False
    with sessions.autocommit.connect() as connection:
        return connection.execute(statement, parameters).one_or_none()


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
