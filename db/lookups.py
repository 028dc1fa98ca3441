"""The lookups on every request: verification's, and authentication's.

Each is one indexed query, built once per database from the models and run on a
connection the worker keeps open: inline on SQLite (an indexed read costs less than a
hop to a thread) and through asyncpg's pool on PostgreSQL, so the event loop never
blocks on the network. There is no ORM session and nothing is cached: revocation,
expiry, permission changes, rotation and a disabled user show on the very next
request, on every worker. Nothing here writes; last use is noted in memory
(``db.usage``) and written by a background flusher.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.engine import URL, Dialect, make_url

from keyplane.db.engine import Limits, postgresql_server_settings
from keyplane.db.errors import Unavailable
from keyplane.db.models import (
    ApiKey,
    ApiKeyPermission,
    Identity,
    KeyStatus,
    Membership,
    RateLimit,
    Role,
    User,
    key_status,
)

UNAVAILABLE = "The database is unavailable or busy; try again shortly"


class Code(enum.StrEnum):
    VALID = "VALID"
    NOT_FOUND = "NOT_FOUND"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    DISABLED = "DISABLED"
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"
    USAGE_EXCEEDED = "USAGE_EXCEEDED"  # its credits, or its identity's, are spent
    RATE_LIMITED = "RATE_LIMITED"  # a rate limit it is checked against is reached


@dataclass(frozen=True, slots=True)
class Found:
    """A key as verification sees it.

    ``by_current_secret`` is False for the secret a rotation replaced (in its grace).
    ``stale_digest`` names the column whose digest was made with a previous server
    secret, so that it can be renewed with the current one (``db.usage``).
    ``enabled`` is the key's switch and its owner's standing together: False when
    the key is switched off, or its owner is deactivated or no longer in the account.
    ``meta`` is the key's JSON text, decoded only for a VALID answer.
    """

    key_id: int
    account_id: int
    user_id: int
    by_current_secret: bool
    previous_secret_expires_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    permissions: tuple[str, ...]
    enabled: bool
    external_id: str | None
    meta: str | None
    stale_digest: tuple[str, str] | None = None  # (column, digest)
    # Usage limits (``db.limits``): the key's remaining credits as read (None: unlimited
    # use), its identity's, and every rate limit of either (name, limit, duration_ms,
    # auto_apply, on the key?). A spend reads its credits again, locked.
    credits: int | None = None
    identity_id: int | None = None
    identity_meta: str | None = None
    identity_credits: int | None = None
    ratelimits: tuple[tuple[str, int, int, bool, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class UserFound:
    """A user as authentication sees it, with their accounts, oldest membership first."""

    user_id: int
    active: bool
    token_generation: int
    memberships: tuple[tuple[int, Role], ...]


def judge(found: Found | None, required: Sequence[str], now: datetime) -> Code:
    """The verdict on a key (None: no key has that secret)."""
    if found is None:
        return Code.NOT_FOUND
    if not found.by_current_secret:
        grace_ends = found.previous_secret_expires_at
        if grace_ends is None or grace_ends <= now:
            return Code.NOT_FOUND
    status = key_status(found, now)
    if status is not KeyStatus.ACTIVE:
        return Code[status.name]  # REVOKED, EXPIRED, DISABLED
    if not set(required) <= set(found.permissions):
        return Code.INSUFFICIENT_PERMISSIONS
    return Code.VALID


def _key_query(permissions: Any, digests: Any, meta: Any, joined: Any) -> Select[Any]:
    """``digests`` is a key's digest under each accepted server secret (an IN list);
    ``joined`` aggregates text into one ``;``-separated string (a dialect's own)."""
    key, links, users = ApiKey.__table__.c, ApiKeyPermission.__table__.c, User.__table__.c
    memberships = Membership.__table__.c
    identities, limits = Identity.__table__.c, RateLimit.__table__.c
    held = select(permissions).where(links.api_key_id == key.id).scalar_subquery()
    # name,limit,duration_ms,auto_apply,owner: names hold none of ",;" (the spec's pattern).
    comma: ColumnElement[str] = literal_column("','", Text)
    limit_text = (
        limits.name
        + comma
        + cast(limits.limit, Text)
        + comma
        + cast(limits.duration_ms, Text)
        + comma
        + case((limits.auto_apply, literal_column("'1'")), else_=literal_column("'0'"))
        + comma
        + case((limits.key_id.is_not(None), literal_column("'k'")), else_=literal_column("'i'"))
    )
    ratelimits = (
        select(joined(limit_text))
        .where(or_(limits.key_id == key.id, limits.identity_id == identities.id))
        .scalar_subquery()
    )
    owner_here = (
        select(memberships.user_id)
        .where(memberships.account_id == key.account_id, memberships.user_id == key.user_id)
        .exists()
    )
    return (
        select(
            key.id,
            key.account_id,
            key.user_id,
            key.key_digest,
            key.previous_key_digest,
            key.previous_key_expires_at,
            key.expires_at,
            key.revoked_at,
            key.last_used_at,
            held.label("permissions"),
            (key.enabled & users.is_active & owner_here).label("enabled"),
            key.external_id,
            meta(key.meta),
            key.credits_remaining,
            identities.id,
            meta(identities.meta),
            identities.credits_remaining,
            ratelimits.label("ratelimits"),
        )
        .join_from(ApiKey.__table__, User.__table__, users.id == key.user_id)
        .outerjoin(
            Identity.__table__,
            and_(
                identities.account_id == key.account_id,
                identities.external_id == key.external_id,
            ),
        )
        .where(or_(digests(key.key_digest), digests(key.previous_key_digest)))
    )


def _user_query() -> Select[Any]:
    users, memberships = User.__table__.c, Membership.__table__.c
    return (
        select(users.is_active, memberships.account_id, memberships.role, users.token_generation)
        .join_from(
            User.__table__, Membership.__table__, memberships.user_id == users.id, isouter=True
        )
        .where(users.id == bindparam("user_id", type_=users.id.type))
        .order_by(memberships.created_at, memberships.account_id)
    )


class Lookups(Protocol):
    """The per-request reads: a key by the digest of its secret, a user by id."""

    queries: int  # how many it has run: a malformed key must cost none

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def key(self, digests: Sequence[str]) -> Found | None:
        """The key whose secret has one of ``digests`` (the current secret's first)."""

    async def keys(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[Found | None, Found | None]:
        """Two keys by their digests, in one query (a verifier's and the key it verifies)."""

    async def user(self, user_id: int) -> UserFound | None: ...


def lookups_for(database_url: str | URL, limits: Limits) -> Lookups:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return SqliteLookups(url.database or ":memory:", limits)
    return PostgresLookups(url, limits)


def _compiled(statement: Select[Any], dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect))


class _Rows:
    """What both drivers share: rows turned into records."""

    queries = 0

    def _time(self, value: Any) -> datetime | None:
        return value  # type: ignore[no-any-return]

    def _key(self, row: Sequence[Any], digests: Sequence[str], permissions: Sequence[str]) -> Found:
        key_digest, previous_digest = row[3], row[4]
        by_current_secret = key_digest in digests
        stale = (
            ("key_digest", key_digest)
            if by_current_secret
            else ("previous_key_digest", previous_digest)
        )
        return Found(
            key_id=row[0],
            account_id=row[1],
            user_id=row[2],
            by_current_secret=by_current_secret,
            previous_secret_expires_at=self._time(row[5]),
            expires_at=self._time(row[6]),
            revoked_at=self._time(row[7]),
            last_used_at=self._time(row[8]),
            permissions=tuple(sorted(permissions)),
            enabled=bool(row[10]),
            external_id=row[11],
            meta=row[12],
            stale_digest=stale if stale[1] != digests[0] else None,
            credits=row[13],
            identity_id=row[14],
            identity_meta=row[15],
            identity_credits=row[16],
            ratelimits=_ratelimits(row[17]),
        )

    def _pair(
        self,
        rows: Sequence[Sequence[Any]],
        first: Sequence[str],
        second: Sequence[str],
        permissions: Any,
    ) -> tuple[Found | None, Found | None]:
        """Each row to the digests it was found by (one row for both: the same key)."""
        found: list[Found | None] = [None, None]
        for row in rows:
            for i, digests in enumerate((first, second)):
                if row[3] in digests or row[4] in digests:
                    found[i] = self._key(row, digests, permissions(row[9]))
        return found[0], found[1]

    @staticmethod
    def _user(user_id: int, rows: Sequence[Sequence[Any]]) -> UserFound | None:
        if not rows:
            return None
        memberships = tuple((row[1], Role(row[2])) for row in rows if row[1] is not None)
        return UserFound(user_id, bool(rows[0][0]), int(rows[0][3]), memberships)


def _ratelimits(text: str | None) -> tuple[tuple[str, int, int, bool, bool], ...]:
    if not text:
        return ()
    found = []
    for item in text.split(";"):
        name, limit, duration, auto, owner = item.split(",")
        found.append((name, int(limit), int(duration), auto == "1", owner == "k"))
    return tuple(found)


def _spaced(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(" ")) if text else ()


class SqliteLookups(_Rows):
    """One read-only connection per worker, used inline on the event loop.

    An indexed read in WAL mode takes microseconds and never waits for writers, so a
    thread hop would cost more than it saves.
    """

    _dialect = sqlite.dialect(paramstyle="named")
    _USER = _compiled(_user_query(), _dialect)

    def __init__(self, path: str, limits: Limits) -> None:
        self.path = path
        self.busy_ms = int(limits.statement_seconds * 1000)
        self._connection: sqlite3.Connection | None = None
        self._key_sql: dict[int, str] = {}  # by the number of accepted server secrets

    async def open(self) -> None:
        """Nothing to do yet: the first lookup connects (start-up never waits for it)."""

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _time(self, value: Any) -> datetime | None:
        # SQLAlchemy stores UTC as "YYYY-MM-DD HH:MM:SS.ffffff" on SQLite (db.models).
        return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

    def _fetch(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        self.queries += 1
        try:
            if self._connection is None:
                connection = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None
                )
                connection.execute(f"PRAGMA busy_timeout = {self.busy_ms}")
                connection.execute("PRAGMA query_only = ON")
                self._connection = connection
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise Unavailable(UNAVAILABLE) from error

    async def key(self, digests: Sequence[str]) -> Found | None:
        rows = self._keys(digests)
        return self._key(rows[0], digests, _spaced(rows[0][9])) if rows else None

    async def keys(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[Found | None, Found | None]:
        return self._pair(self._keys([*first, *second]), first, second, _spaced)

    def _keys(self, digests: Sequence[str]) -> list[Any]:
        sql = self._key_sql.get(len(digests)) or self._compile_key(len(digests))
        return self._fetch(sql, {f"digest_{i}": digest for i, digest in enumerate(digests)})

    def _compile_key(self, count: int) -> str:
        names = [bindparam(f"digest_{i}", type_=ApiKey.key_digest.type) for i in range(count)]
        permissions = func.group_concat(
            ApiKeyPermission.__table__.c.permission_id, literal_column("' '")
        )
        sql = self._key_sql[count] = _compiled(
            _key_query(
                permissions,
                lambda column: column.in_(names),
                lambda meta: meta,
                lambda text: func.group_concat(text, literal_column("';'")),
            ),
            self._dialect,
        )
        return sql

    async def user(self, user_id: int) -> UserFound | None:
        return self._user(user_id, self._fetch(self._USER, {"user_id": user_id}))


_abandoned: set[asyncio.Future[Any]] = set()


def _abandon(work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` without waiting for it; keep it referenced until it has unwound."""
    work.cancel()
    _abandoned.add(work)
    work.add_done_callback(_abandoned.discard)
    work.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _keep_session(connection: Any) -> None:
    """A released connection needs no reset: the lookups only read, through prepared
    statements, and never change the session (no locks, cursors, listeners or settings).

    asyncpg's default reset is one more round trip per lookup (``RESET ALL``, ``UNLISTEN
    *``, ...), half the cost of the lookup itself; asyncpg still rolls back a transaction
    a connection might be left in before calling this.
    """


class PostgresLookups(_Rows):
    """asyncpg's pool: statements prepared once per connection, the loop never blocks."""

    _dialect = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]
    _KEY = _compiled(
        _key_query(
            func.array_agg(ApiKeyPermission.__table__.c.permission_id),
            lambda column: column == any_(bindparam("digests", type_=ARRAY(String))),
            # As text, so asyncpg hands it over undecoded (decoded for a VALID answer only).
            lambda meta: cast(meta, Text),
            lambda text: func.string_agg(text, literal_column("';'")),
        ),
        _dialect,
    )
    _USER = _compiled(_user_query(), _dialect)

    def __init__(self, url: URL, limits: Limits) -> None:
        self.url = url
        self.limits = limits
        # A pool belongs to the event loop that made it: one per loop (a worker has one;
        # tests may run the same app on two, as Schemathesis does beside a test client).
        self._pools: dict[asyncio.AbstractEventLoop, Any] = {}

    async def open(self) -> None:
        """Nothing to do yet: the first lookup connects (start-up never waits for it)."""

    async def close(self) -> None:
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    async def pool(self) -> Any:
        """This event loop's pool, made on first use (``bench.floor`` borrows it too)."""
        import asyncpg

        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = await asyncpg.create_pool(
                host=self.url.host,
                port=self.url.port,
                user=self.url.username,
                password=self.url.password,
                database=self.url.database,
                min_size=0,
                max_size=self.limits.pool_size,
                timeout=self.limits.connect_seconds,
                command_timeout=self.limits.statement_seconds,
                # The lookups are a few prepared statements, run thousands of times a
                # second: plan them once. PostgreSQL would otherwise plan the key lookup
                # afresh on every run (its `= ANY($1)` estimate keeps the generic plan
                # looking dearer), which nearly doubles its cost (391 -> 206 us measured).
                server_settings=self._server_settings(),
                reset=_keep_session,
                # Behind a transaction pooler, no statement is kept (see _fetch_now).
                statement_cache_size=0 if self.limits.transaction_pooler else 100,
            )
        return pool

    def _server_settings(self) -> dict[str, str]:
        """Per-session settings, sent as startup parameters, which a pooler refuses: the
        client's own timeout (``command_timeout``) bounds each lookup there."""
        if self.limits.transaction_pooler:
            return {}
        return postgresql_server_settings(self.limits) | {"plan_cache_mode": "force_generic_plan"}

    async def _fetch(self, sql: str, *arguments: Any) -> list[Any]:
        import asyncpg

        self.queries += 1
        # Waiting for a pooled connection counts too: all of it within one budget. Work
        # that outlives it is abandoned, not awaited: cancelling a query on a database
        # that does not answer can itself hang.
        work = asyncio.ensure_future(self._fetch_now(sql, *arguments))
        try:
            done, _ = await asyncio.wait({work}, timeout=self.limits.statement_seconds)
        except asyncio.CancelledError:
            _abandon(work)
            raise
        if not done:
            _abandon(work)
            raise Unavailable(UNAVAILABLE)
        try:
            return work.result()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise Unavailable(UNAVAILABLE) from error

    async def _fetch_now(self, sql: str, *arguments: Any) -> list[Any]:
        pool = await self.pool()
        if not self.limits.transaction_pooler:
            return list(await pool.fetch(sql, *arguments))
        # asyncpg prepares (Parse, Describe, Sync) and then executes (Bind, Execute,
        # Sync): a transaction pooler may hand the two to different server connections,
        # one of which never saw the statement. Inside a transaction they stay on one.
        async with pool.acquire() as connection, connection.transaction(readonly=True):
            return list(await connection.fetch(sql, *arguments))

    async def key(self, digests: Sequence[str]) -> Found | None:
        rows = await self._fetch(self._KEY, list(digests))
        return self._key(rows[0], digests, rows[0][9] or ()) if rows else None

    async def keys(
        self, first: Sequence[str], second: Sequence[str]
    ) -> tuple[Found | None, Found | None]:
        rows = await self._fetch(self._KEY, [*first, *second])
        return self._pair(rows, first, second, lambda held: held or ())

    async def user(self, user_id: int) -> UserFound | None:
        return self._user(user_id, await self._fetch(self._USER, user_id))
