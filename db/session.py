"""The request's session, kept in a context variable.

``keyplane.middleware.RequestScope`` opens it when a request starts and commits or
rolls it back in one place; everything below only ``flush()``es. A context variable
(rather than ``flask.g``) reaches the security functions, which run before Flask, and
the Flask worker thread alike, since both run in copies of the request's context.
"""

from __future__ import annotations

from contextvars import ContextVar

from sqlalchemy.orm import Session

_current: ContextVar[Session] = ContextVar("keyplane_db_session")


def current() -> Session:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no database session: not inside a request scope") from None


def bind(session: Session) -> object:
    return _current.set(session)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
