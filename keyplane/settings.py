"""Typed settings, read once from ``KEYPLANE_*`` variables by the app factory.

The server secret is never a value printed anywhere: it is ``KEYPLANE_SECRET_KEY``, or,
for an embedded SQLite database, a random one generated on first start and kept
beside the database (``<database>.secret``, mode 0600), reused on later starts. A
PostgreSQL deployment must be given one explicitly: every instance must share it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from keyplane.db.engine import DEFAULT_DATABASE_URL, Limits, supported_url

MIN_SECRET_BYTES = 32
N = TypeVar("N", int, float)
HOW_TO_GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(48))"'


class SettingsError(ValueError):
    """A configuration that Keyplane refuses to run with."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = field(default="", repr=False)
    # Older secrets, still accepted while keys and tokens move to the current one.
    previous_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    token_ttl_seconds: int = 3600
    validate_responses: bool = False
    # last_used_at is written at most once per key per this many seconds.
    last_used_resolution_seconds: int = 5
    login_max_failures: int = 10
    login_window_seconds: int = 900
    # ... and from one client address, whatever the usernames (guessing across names).
    login_max_failures_per_address: int = 100
    # "on": GET /metrics on the API's port, for this bearer token only; "off"; or a port
    # number of its own.
    metrics: str = "on"
    metrics_token: str | None = field(default=None, repr=False)
    admin_password: str | None = field(default=None, repr=False)
    # A request's work (once its body has arrived) gets this long; then 503. The
    # database's statement, lock and idle-in-transaction timeouts are the same.
    request_timeout_seconds: float = 5.0
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # "transaction": PostgreSQL is reached through a pooler in transaction mode
    # (PgBouncer), so no session state and no prepared statement outlives a transaction.
    db_pooler: str = "none"
    # The addresses (or networks) of the reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Threads per worker process that run management handlers (Flask, behind a2wsgi).
    threads: int = 4
    # Password hashes (argon2id, 64 MiB each) at once per worker; the excess waits this long.
    password_hashes: int = 2
    password_wait_seconds: float = 2.0
    # Every request: at most this big (413), its headers and its body in this long (408).
    max_body_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    # The documentation site ``make docs`` builds, served at /docs/ (None: not served).
    docs_site: str | None = None
    # Rate-limit windows in this Redis, shared by every instance (None: in the database).
    # Its URL may hold a password: never shown.
    redis_url: str | None = field(default=None, repr=False)
    redis_timeout_seconds: float = 0.5
    # Verify without a credential, as before verifiers: for a trusted network only.
    verify_open: bool = False
    # Verify counts (GET /v1/usage) are kept this long, then dropped by the server.
    usage_retention_days: int = 90
    # Webhooks (keyplane.webhooks): sends to private, loopback and link-local addresses
    # only if allowed; each send's whole time; sends at once per worker process; how many
    # days before its expiry a key's ``key.expiring`` event is sent.
    webhooks_allow_private: bool = False
    webhooks_timeout_seconds: float = 10.0
    webhooks_concurrency: int = 4
    webhooks_expiring_days: int = 7
    # Leak reports (POST /v1/leaks/github, POST /v1/leaks): GitHub's public keys (a
    # file, or an https:// URL such as GitHub's own), and the bearer token of the
    # operator's own scanners (None: that operation is off).
    github_leak_keys: str | None = None
    leak_report_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, with_secret: bool = True
    ) -> Settings:
        """``with_secret=False`` for operator commands that need none (and create none)."""
        env = os.environ if environ is None else environ
        database_url = env.get("KEYPLANE_DATABASE_URL", DEFAULT_DATABASE_URL)
        try:
            supported_url(database_url)
        except ValueError as error:
            raise SettingsError(f"KEYPLANE_DATABASE_URL {error}") from None
        secret_key = env.get("KEYPLANE_SECRET_KEY", "")
        if with_secret and not secret_key:
            secret_key = _secret_beside(database_url)
        settings = cls(
            database_url=database_url,
            secret_key=secret_key,
            previous_secret_keys=tuple(env.get("KEYPLANE_PREVIOUS_SECRET_KEYS", "").split()),
            token_ttl_seconds=_int(env, "KEYPLANE_TOKEN_TTL_SECONDS", 3600),
            validate_responses=env.get("KEYPLANE_VALIDATE_RESPONSES", "") in {"1", "true"},
            last_used_resolution_seconds=_int(env, "KEYPLANE_LAST_USED_RESOLUTION_SECONDS", 5),
            login_max_failures=_int(env, "KEYPLANE_LOGIN_MAX_FAILURES", 10),
            login_window_seconds=_int(env, "KEYPLANE_LOGIN_WINDOW_SECONDS", 900),
            login_max_failures_per_address=_int(
                env, "KEYPLANE_LOGIN_MAX_FAILURES_PER_ADDRESS", 100
            ),
            metrics=env.get("KEYPLANE_METRICS", "on"),
            metrics_token=env.get("KEYPLANE_METRICS_TOKEN") or None,
            admin_password=env.get("KEYPLANE_ADMIN_PASSWORD") or None,
            request_timeout_seconds=_float(env, "KEYPLANE_REQUEST_TIMEOUT_SECONDS", 5.0),
            db_pool_size=_int(env, "KEYPLANE_DB_POOL_SIZE", 10),
            db_max_overflow=_int(env, "KEYPLANE_DB_MAX_OVERFLOW", 10),
            db_pooler=env.get("KEYPLANE_DB_POOLER", "none"),
            trusted_proxies=tuple(
                env.get("KEYPLANE_TRUSTED_PROXIES", "").replace(",", " ").split()
            ),
            threads=_int(env, "KEYPLANE_THREADS", 4),
            password_hashes=_int(env, "KEYPLANE_PASSWORD_HASHES", 2),
            max_body_bytes=_int(env, "KEYPLANE_MAX_BODY_BYTES", 64 * 1024),
            header_timeout_seconds=_float(env, "KEYPLANE_HEADER_TIMEOUT_SECONDS", 10.0),
            body_timeout_seconds=_float(env, "KEYPLANE_BODY_TIMEOUT_SECONDS", 10.0),
            docs_site=env.get("KEYPLANE_DOCS_SITE") or _built_docs(),
            redis_url=env.get("KEYPLANE_REDIS_URL") or None,
            redis_timeout_seconds=_float(env, "KEYPLANE_REDIS_TIMEOUT_SECONDS", 0.5),
            verify_open=env.get("KEYPLANE_VERIFY_OPEN", "") in {"1", "true"},
            usage_retention_days=_int(env, "KEYPLANE_USAGE_RETENTION_DAYS", 90),
            webhooks_allow_private=env.get("KEYPLANE_WEBHOOKS_ALLOW_PRIVATE", "") in {"1", "true"},
            webhooks_timeout_seconds=_float(env, "KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS", 10.0),
            webhooks_concurrency=_int(env, "KEYPLANE_WEBHOOKS_CONCURRENCY", 4),
            webhooks_expiring_days=_int(env, "KEYPLANE_WEBHOOKS_EXPIRING_DAYS", 7),
            github_leak_keys=env.get("KEYPLANE_GITHUB_LEAK_KEYS") or None,
            leak_report_token=env.get("KEYPLANE_LEAK_REPORT_TOKEN") or None,
        )
        settings.check(with_secret=with_secret)
        return settings

    def check(self, *, with_secret: bool = True) -> None:
        """Refuse settings that would be unsafe (full-stack-fastapi-template's rule)."""
        for name, secret in [
            ("KEYPLANE_SECRET_KEY", self.secret_key),
            *(("KEYPLANE_PREVIOUS_SECRET_KEYS", old) for old in self.previous_secret_keys),
        ]:
            if (with_secret or secret) and len(secret.encode()) < MIN_SECRET_BYTES:
                raise SettingsError(
                    f"{name} must be a random value of at least {MIN_SECRET_BYTES} bytes; "
                    f"generate one with: {HOW_TO_GENERATE}"
                )
        for name in (
            "token_ttl_seconds",
            "login_max_failures",
            "login_max_failures_per_address",
            "login_window_seconds",
        ):
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
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise SettingsError("KEYPLANE_MAX_BODY_BYTES must be between 1024 and 16 MiB")
        for name in ("header_timeout_seconds", "body_timeout_seconds"):
            if not 0.5 <= getattr(self, name) <= 300:
                raise SettingsError(f"KEYPLANE_{name.upper()} must be between 0.5 and 300")
        if not 1 <= self.password_hashes <= 64:
            raise SettingsError("KEYPLANE_PASSWORD_HASHES must be between 1 and 64")
        if not 1 <= self.threads <= 64:
            raise SettingsError("KEYPLANE_THREADS must be between 1 and 64")
        if not 0.05 <= self.redis_timeout_seconds <= self.request_timeout_seconds / 2:
            raise SettingsError(
                "KEYPLANE_REDIS_TIMEOUT_SECONDS must be between 0.05 and half of "
                "KEYPLANE_REQUEST_TIMEOUT_SECONDS"
            )
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError("KEYPLANE_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        if not 1 <= self.usage_retention_days <= 3660:
            raise SettingsError("KEYPLANE_USAGE_RETENTION_DAYS must be between 1 and 3660")
        if not 1 <= self.webhooks_timeout_seconds <= 30:
            raise SettingsError("KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS must be between 1 and 30")
        if not 1 <= self.webhooks_concurrency <= 64:
            raise SettingsError("KEYPLANE_WEBHOOKS_CONCURRENCY must be between 1 and 64")
        if not 1 <= self.webhooks_expiring_days <= 365:
            raise SettingsError("KEYPLANE_WEBHOOKS_EXPIRING_DAYS must be between 1 and 365")
        token = self.leak_report_token
        if token is not None and len(token.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"KEYPLANE_LEAK_REPORT_TOKEN must be a random value of at least "
                f"{MIN_SECRET_BYTES} bytes; generate one with: {HOW_TO_GENERATE}"
            )
        if self.db_pooler not in {"none", "transaction"}:
            raise SettingsError("KEYPLANE_DB_POOLER must be none or transaction")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(
                    f"KEYPLANE_TRUSTED_PROXIES: {proxy!r} is not an IP address or network"
                ) from None
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
            transaction_pooler=self.db_pooler == "transaction",
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int, "an integer")


def _number(
    env: Mapping[str, str], name: str, default: N, kind: Callable[[str], N], what: str
) -> N:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None


def _built_docs() -> str | None:
    """A checkout's site/, once ``make docs`` has built it."""
    site = Path(__file__).resolve().parent.parent / "site"
    return str(site) if (site / "index.html").is_file() else None


def _secret_beside(database_url: str) -> str:
    """An embedded database's secret: read from beside it, or made there on first start."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise SettingsError(
            "KEYPLANE_SECRET_KEY is not set; with a database server, every instance must be "
            f"given the same one: generate it with: {HOW_TO_GENERATE}"
        )
    if not url.database or url.database == ":memory:":
        return secrets.token_urlsafe(48)  # nothing outlives the process anyway
    path = Path(url.database + ".secret").resolve()
    if not path.exists():
        _create(path, secrets.token_urlsafe(48))
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{path} must be readable by its owner only: chmod 600 {path}")
    return path.read_text().strip()


def _create(path: Path, secret: str) -> None:
    """Atomically, mode 0600: of several processes starting at once, one secret wins."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise SettingsError(f"cannot keep the server secret beside the database: {error}") from None
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process made it first: theirs is the secret
    finally:
        with contextlib.suppress(FileNotFoundError):
            draft.unlink()
