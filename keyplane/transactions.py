"""One request, one transaction, owned here: the unit of work around each handler.

The resolver wraps every synchronous handler so that, in the very thread that runs
it, a session is opened, committed when the handler's answer is below 400 and rolled
back otherwise (or on any exception), and closed before the thread is released. The
commit happens before the response starts, so a client that sees 2xx can rely on the
change being committed; if the commit fails, the client gets the error instead. A
request that writes (any method but GET/HEAD) takes SQLite's write lock when its
transaction begins (``db.engine.for_writing``).

Before a request that wrote commits, ``db.authority.confirm`` re-reads, under share
locks, that its caller may still do it (their body may have arrived seconds after
their headers were authenticated): if not, it commits nothing and answers 401/403 as a
fresh request would, ahead of whatever refusal the handler itself reached.

A request that ran out of time (``keyplane.deadline``) is rolled back, never
committed later. ``db.session.apart`` is the one named way to write outside it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import connexion
from connexion.lifecycle import ConnexionResponse
from connexion.resolver import RelativeResolver
from flask import Response as FlaskResponse
from sqlalchemy.orm import Session

from keyplane import db, deadline
from keyplane.db.errors import KeyplaneError, Unavailable
from keyplane.handlers.context import claimed_principal

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UnitOfWorkResolver(RelativeResolver):  # type: ignore[misc]
    """``operationId: api_keys.update`` -> ``handlers/api_keys.py:update``, as one unit of work."""

    def resolve_function_from_operation_id(self, operation_id: str) -> Callable[..., Any]:
        function: Callable[..., Any] = super().resolve_function_from_operation_id(operation_id)
        if inspect.iscoroutinefunction(function):
            return function  # the data plane: no request transaction
        return unit_of_work(function)


def unit_of_work(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        writes = connexion.request.method not in READ_METHODS
        session = db.session.new(writes=writes)
        principal = claimed_principal()
        if principal is not None:
            db.authority.claim(session, principal.authority())
        token = db.session.bind(session)
        try:
            try:
                result = handler(*args, **kwargs)
            except KeyplaneError:
                # A caller who may no longer ask hears that, not how the asking went.
                _confirm_if_written(session, writes)
                raise
            if _status(result) >= 400:
                session.rollback()
                return result
            _confirm_if_written(session, writes)
            if deadline.claim_commit():
                session.commit()
            else:
                session.rollback()
                raise Unavailable(deadline.MESSAGE, deadline.RETRY_AFTER_SECONDS)
            return result
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            db.session.unbind(token)

    return run


def _confirm_if_written(session: Session, writes: bool) -> None:
    """Only a writing request whose transaction began has anything to commit."""
    if writes and session.in_transaction():
        db.authority.confirm(session)


def _status(result: Any) -> int:
    if isinstance(result, ConnexionResponse | FlaskResponse):
        return int(result.status_code)
    if isinstance(result, tuple) and len(result) > 1 and isinstance(result[1], int):
        return result[1]
    return 200
