"""The errors Keyplane raises, as types. Each surface shapes them once (``problems``)."""

from __future__ import annotations

from typing import Any


class KeyplaneError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(KeyplaneError):
    status = 401


class Forbidden(KeyplaneError):
    status = 403


class NotFound(KeyplaneError):
    status = 404


class Conflict(KeyplaneError):
    status = 409


class InvalidInput(KeyplaneError):
    """Input that passed the schema but breaks a rule the schema cannot express.

    ``loc`` is FastAPI's location (``["body", "expires_at"]``), so the v1 surface can
    answer its 422 list; the console surface answers a 400 with ``console_message``
    when the seed fixes one, else with the message.
    """

    status = 422
    console_message: str | None = None

    def __init__(self, message: str, loc: list[str | int], error_type: str = "value_error"):
        super().__init__(message)
        self.loc = loc
        self.error_type = error_type

    def details(self) -> list[dict[str, Any]]:
        return [{"loc": self.loc, "msg": self.message, "type": self.error_type}]


class UnknownPermissions(InvalidInput):
    """Permission ids not in the account's catalog (the console contract's exact 400)."""

    console_message = "Invalid permissions provided"

    def __init__(self, positions: list[int], field: str = "permissions") -> None:
        message = "Permission is not in the account's catalog"
        super().__init__(message, ["body", field, positions[0]])
        self.positions = positions
        self.field = field

    def details(self) -> list[dict[str, Any]]:
        return [
            {"loc": ["body", self.field, i], "msg": self.message, "type": self.error_type}
            for i in self.positions
        ]


class TooManyRequests(KeyplaneError):
    status = 429

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unavailable(KeyplaneError):
    """Something the request needs (the database, a password-hashing slot) cannot answer
    in time; nothing was changed, and the client may try again after a moment."""

    status = 503

    def __init__(self, message: str, retry_after_seconds: int = 2) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class OAuthError(KeyplaneError):
    """RFC 6749 §5.2 errors of the token endpoint: ``{"error": code, ...}``."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
