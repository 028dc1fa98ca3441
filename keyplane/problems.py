"""Errors to responses, once per surface.

* v1 (``/v1/...``, and anything outside the console): FastAPI's shapes, 422
  ``{"detail": [{"loc", "msg", "type"}]}`` for validation, ``{"detail": "..."}`` else.
* console (``/apikeys...``, the console contract): ``{"error": "..."}``, validation is a 400.

Also repairs a habit of Connexion 3: 405 answers list the methods the spec declares
for the path in ``Allow``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from connexion import FlaskApp
from connexion.exceptions import (
    BadRequestProblem,
    ProblemException,
    UnsupportedMediaTypeProblem,
)
from connexion.exceptions import Forbidden as ConnexionForbidden
from connexion.exceptions import Unauthorized as ConnexionUnauthorized
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from keyplane import deadline
from keyplane.db import access
from keyplane.db.errors import (
    InvalidInput,
    KeyplaneError,
    OAuthError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from keyplane.validation import RequestInvalid, describe, detail

logger = logging.getLogger("keyplane.errors")

CONSOLE_PREFIX = "/apikeys"
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}
DATABASE_UNAVAILABLE = "The database is unavailable or busy; try again shortly"
_CONSOLE_MESSAGES = {404: "API key not found", 500: "Internal server error"}


@dataclass(frozen=True)
class _PathTemplate:
    pattern: re.Pattern[str]
    methods: frozenset[str]


class Problems:
    def __init__(self, spec: Mapping[str, Any]) -> None:
        """``spec`` with its ``$ref``s resolved (a Connexion ``Specification``)."""
        self._paths = [_template(path, item) for path, item in spec["paths"].items()]

    def register(self, app: FlaskApp) -> None:
        handlers: list[tuple[Any, Callable[[ConnexionRequest, Any], ConnexionResponse]]] = [
            (RequestInvalid, self.request_invalid),
            (KeyplaneError, self.keyplane_error),
            # Down, unreachable, too slow, locked, full: the database cannot answer now.
            (OperationalError, self.database_unavailable),
            (InterfaceError, self.database_unavailable),
            (PoolTimeout, self.database_unavailable),
            (ConnexionUnauthorized, self.not_authenticated),
            (ConnexionForbidden, self.connexion_forbidden),
            (UnsupportedMediaTypeProblem, self.problem),
            (BadRequestProblem, self.bad_request),
            (ProblemException, self.problem),
            (404, self.not_found),
            (405, self.method_not_allowed),
            (HTTPException, self.http_exception),
            (Exception, self.unexpected),
        ]
        for exception, handler in handlers:
            app.add_error_handler(exception, handler)

    # -- handlers -------------------------------------------------------------------

    def request_invalid(
        self, request: ConnexionRequest, error: RequestInvalid
    ) -> ConnexionResponse:
        return _validation_failed(request, error.errors)

    def keyplane_error(self, request: ConnexionRequest, error: KeyplaneError) -> ConnexionResponse:
        if isinstance(error, InvalidInput):
            if error.console_message and _is_console(request):
                return _json(400, {"error": error.console_message})
            return _validation_failed(request, error.details())
        if isinstance(error, OAuthError):
            body = {"error": error.code, "error_description": error.message}
            return _json(error.status, body, {"Cache-Control": "no-store"})
        if isinstance(error, Unauthorized):
            return _unauthorized(request, error.message)
        if isinstance(error, TooManyRequests | Unavailable):
            response = _message(request, error.status, error.message)
            response.headers["Retry-After"] = str(error.retry_after_seconds)
            return response
        return _message(request, error.status, error.message)

    def database_unavailable(
        self, request: ConnexionRequest, error: Exception
    ) -> ConnexionResponse:
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, error)
        return self.keyplane_error(
            request, Unavailable(DATABASE_UNAVAILABLE, deadline.RETRY_AFTER_SECONDS)
        )

    def not_authenticated(self, request: ConnexionRequest, _: Exception) -> ConnexionResponse:
        return _unauthorized(request, access.NOT_AUTHENTICATED)

    def connexion_forbidden(self, request: ConnexionRequest, _: Exception) -> ConnexionResponse:
        return _message(request, 403, _STATUS_TEXT[403])

    def bad_request(self, request: ConnexionRequest, error: BadRequestProblem) -> ConnexionResponse:
        return _validation_failed(request, [detail(["body"], str(error.detail), "value_error")])

    def problem(self, request: ConnexionRequest, error: ProblemException) -> ConnexionResponse:
        if error.status >= 500:
            return self.unexpected(request, error)
        return _message(request, error.status, _STATUS_TEXT.get(error.status, str(error.title)))

    def not_found(self, request: ConnexionRequest, _: Exception) -> ConnexionResponse:
        return _message(request, 404, _STATUS_TEXT[404])

    def method_not_allowed(self, request: ConnexionRequest, _: Exception) -> ConnexionResponse:
        template = self._match(request.url.path)
        methods = sorted(template.methods) if template else []
        response = _message(request, 405, _STATUS_TEXT[405])
        response.headers["Allow"] = ", ".join(methods)
        return response

    def http_exception(self, request: ConnexionRequest, error: HTTPException) -> ConnexionResponse:
        if error.status_code >= 500:
            return self.unexpected(request, error)
        return _message(request, error.status_code, _STATUS_TEXT.get(error.status_code, "Error"))

    def unexpected(self, request: ConnexionRequest, error: Exception) -> ConnexionResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return _message(request, 500, _STATUS_TEXT[500])

    def _match(self, path: str) -> _PathTemplate | None:
        return next((t for t in self._paths if t.pattern.fullmatch(path)), None)


def _template(path: str, item: dict[str, Any]) -> _PathTemplate:
    names = re.findall(r"{([^}]+)}", path)
    regex = re.escape(path)
    for name in names:
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
    return _PathTemplate(
        pattern=re.compile(regex),
        methods=frozenset(m.upper() for m in _HTTP_METHODS if m in item),
    )


def is_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def _is_console(request: ConnexionRequest) -> bool:
    return is_console(request.url.path)


def message_body(path: str, status: int, message: str) -> bytes:
    """An error's body in the shape of the surface that ``path`` belongs to."""
    if is_console(path):
        return json.dumps({"error": _CONSOLE_MESSAGES.get(status, message)}).encode()
    return json.dumps({"detail": message}).encode()


def error_response(path: str, error: KeyplaneError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """An error's body and headers, for middleware that answers outside Connexion."""
    headers = [(b"content-type", b"application/json")]
    if isinstance(error, TooManyRequests | Unavailable):
        headers.append((b"retry-after", str(error.retry_after_seconds).encode()))
    return message_body(path, error.status, error.message), headers


def timed_out(path: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The 503 of a request that ran out of time (``keyplane.deadline``)."""
    return error_response(path, Unavailable(deadline.MESSAGE, deadline.RETRY_AFTER_SECONDS))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        mimetype="application/json",
        body=json.dumps(body),
        headers=headers or {},
    )


def _message(request: ConnexionRequest, status: int, message: str) -> ConnexionResponse:
    return ConnexionResponse(
        status_code=status,
        mimetype="application/json",
        body=message_body(request.url.path, status, message),
        headers={},
    )


def _unauthorized(request: ConnexionRequest, message: str) -> ConnexionResponse:
    response = _message(request, 401, message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _validation_failed(
    request: ConnexionRequest, errors: list[dict[str, Any]]
) -> ConnexionResponse:
    if _is_console(request):
        return _json(400, {"error": "; ".join(describe(e) for e in errors)})
    return _json(422, {"detail": errors})
