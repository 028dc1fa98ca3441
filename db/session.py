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


_KEEP_ON_REFUSAL = "keyplane.keep_on_refusal"


def keep_writes_on_refusal() -> None:
    """Commit this request's writes even though it answers 4xx (a failed login's record).

    An exception (5xx) still rolls everything back.
    """
    current().info[_KEEP_ON_REFUSAL] = True


def keeps_writes_on_refusal(session: Session) -> bool:
    return bool(session.info.get(_KEEP_ON_REFUSAL))


def bind(session: Session) -> object:
    return _current.set(session)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
