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
    answer its 422 list and the console surface its 400 message.
    """

    status = 422

    def __init__(self, message: str, loc: list[str | int], error_type: str = "value_error"):
        super().__init__(message)
        self.loc = loc
        self.error_type = error_type

    def as_detail(self) -> dict[str, Any]:
        return {"loc": self.loc, "msg": self.message, "type": self.error_type}


class OAuthError(KeyplaneError):
    """RFC 6749 §5.2 errors of the token endpoint: ``{"error": code, ...}``."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
