"""One request, one transaction, owned here: the unit of work around each handler.

The resolver wraps every synchronous handler so that, in the very thread that runs
it, a session is opened, committed when the handler's answer is below 400 and rolled
back otherwise (or on any exception), and closed before the thread is released. The
commit happens before the response starts, so a client that sees 2xx can rely on the
change being committed; if the commit fails, the client gets the error instead. A
request that writes (any method but GET/HEAD) takes SQLite's write lock when its
transaction begins (``db.engine.for_writing``).

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

import db.session
from db.errors import Unavailable
from keyplane import deadline

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
        token = db.session.bind(session)
        try:
            result = handler(*args, **kwargs)
            if _status(result) >= 400:
                session.rollback()
            elif deadline.claim_commit():
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


def _status(result: Any) -> int:
    if isinstance(result, ConnexionResponse | FlaskResponse):
        return int(result.status_code)
    if isinstance(result, tuple) and len(result) > 1 and isinstance(result[1], int):
        return result[1]
    return 200
