"""Typed settings, read once from ``KEYPLANE_*`` variables by the app factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from db.engine import Limits

DEFAULT_DATABASE_URL = "sqlite:///keyplane.db"
# Development only: production refuses to start with it (see ``Settings.check``).
DEV_SECRET_KEY = "keyplane-development-secret-do-not-use-in-production"  # noqa: S105
MIN_SECRET_BYTES = 32


class SettingsError(ValueError):
    """A configuration that Keyplane refuses to run with."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = DEV_SECRET_KEY
    environment: str = "development"
    token_ttl_seconds: int = 3600
    validate_responses: bool = False
    # last_used_at is written at most once per key per this many seconds.
    last_used_resolution_seconds: int = 5
    login_max_failures: int = 10
    login_window_seconds: int = 900
    # "on": GET /metrics on the API's port; "off"; or a port number of its own.
    metrics: str = "on"
    admin_password: str | None = field(default=None, repr=False)
    # A request's work (once its body has arrived) gets this long; then 503. The
    # database's statement, lock and idle-in-transaction timeouts are the same.
    request_timeout_seconds: float = 5.0
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # Threads per worker process that run management handlers (Flask, behind a2wsgi).
    threads: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=env.get("KEYPLANE_DATABASE_URL", DEFAULT_DATABASE_URL),
            secret_key=env.get("KEYPLANE_SECRET_KEY", DEV_SECRET_KEY),
            environment=env.get("KEYPLANE_ENV", "development"),
            token_ttl_seconds=_int(env, "KEYPLANE_TOKEN_TTL_SECONDS", 3600),
            validate_responses=env.get("KEYPLANE_VALIDATE_RESPONSES", "") in {"1", "true"},
            last_used_resolution_seconds=_int(env, "KEYPLANE_LAST_USED_RESOLUTION_SECONDS", 5),
            login_max_failures=_int(env, "KEYPLANE_LOGIN_MAX_FAILURES", 10),
            login_window_seconds=_int(env, "KEYPLANE_LOGIN_WINDOW_SECONDS", 900),
            metrics=env.get("KEYPLANE_METRICS", "on"),
            admin_password=env.get("KEYPLANE_ADMIN_PASSWORD") or None,
            request_timeout_seconds=_float(env, "KEYPLANE_REQUEST_TIMEOUT_SECONDS", 5.0),
            db_pool_size=_int(env, "KEYPLANE_DB_POOL_SIZE", 10),
            db_max_overflow=_int(env, "KEYPLANE_DB_MAX_OVERFLOW", 10),
            threads=_int(env, "KEYPLANE_THREADS", 4),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that would be unsafe (full-stack-fastapi-template's rule)."""
        if self.environment == "production" and (
            self.secret_key == DEV_SECRET_KEY or len(self.secret_key.encode()) < MIN_SECRET_BYTES
        ):
            raise SettingsError(
                "KEYPLANE_ENV=production needs KEYPLANE_SECRET_KEY set to a random value "
                f"of at least {MIN_SECRET_BYTES} bytes "
                '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        for name in ("token_ttl_seconds", "login_max_failures", "login_window_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"KEYPLANE_{name.upper()} must be positive")
        if self.metrics not in {"on", "off"} and not (
            self.metrics.isdigit() and 0 < int(self.metrics) < 65536
        ):
            raise SettingsError("KEYPLANE_METRICS must be on, off or a port number")
        if self.last_used_resolution_seconds <= 0:
            raise SettingsError("KEYPLANE_LAST_USED_RESOLUTION_SECONDS must be positive")
        if not 0.5 <= self.request_timeout_seconds <= 300:
            raise SettingsError("KEYPLANE_REQUEST_TIMEOUT_SECONDS must be between 0.5 and 300")
        if not 1 <= self.threads <= 64:
            raise SettingsError("KEYPLANE_THREADS must be between 1 and 64")
        if self.db_pool_size < 1 or self.db_max_overflow < 0:
            raise SettingsError(
                "KEYPLANE_DB_POOL_SIZE must be at least 1, KEYPLANE_DB_MAX_OVERFLOW at least 0"
            )

    def database_limits(self) -> Limits:
        """Every wait on the database fits in a request's time (see db.engine)."""
        return Limits(
            connect_seconds=min(2.0, self.request_timeout_seconds / 2),
            statement_seconds=self.request_timeout_seconds,
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            pool_timeout_seconds=min(2.0, self.request_timeout_seconds / 2),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
