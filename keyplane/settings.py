"""Typed settings, read once from ``KEYPLANE_*`` variables by the app factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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
        if self.last_used_resolution_seconds < 0:
            raise SettingsError("KEYPLANE_LAST_USED_RESOLUTION_SECONDS must not be negative")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
