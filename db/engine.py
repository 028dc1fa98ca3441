"""Engine construction: one place that knows the differences between SQLite and PostgreSQL.

How writes serialize, and how long anything may wait, is decided here:

* SQLite allows one writer at a time. A transaction that will write takes the write
  lock when it begins (``BEGIN IMMEDIATE``, on an engine from ``for_writing``) and
  waits its turn for at most the busy timeout; a deferred ``BEGIN`` that read first
  could fail later with ``SQLITE_BUSY_SNAPSHOT``, which no timeout can wait out.
  Read-only transactions stay deferred and never wait for writers (WAL mode).
* PostgreSQL serializes changes to one record with row locks (``SELECT ... FOR
  UPDATE`` in the modules that change records). Connecting, waiting for a pooled
  connection, and each statement have short, bounded timeouts (``Limits``), and the
  server ends a transaction whose client went silent, so a request that timed out
  can never be committed later.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

# An embedded database in the working folder, unless KEYPLANE_DATABASE_URL says otherwise.
DEFAULT_DATABASE_URL = "sqlite:///keyplane.db"
# The databases and drivers Keyplane is built and tested on.
SUPPORTED = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def supported_url(database_url: str) -> URL:
    """The URL, parsed, or a ``ValueError`` saying in one line why Keyplane cannot use it."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ValueError(
            "is not a database URL (sqlite:///PATH or postgresql://USER@HOST/NAME)"
        ) from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend not in SUPPORTED:
        raise ValueError(f"names {backend!r}; Keyplane runs on sqlite or postgresql")
    if driver != SUPPORTED[backend]:
        raise ValueError(
            f"names the driver {driver!r}; Keyplane uses {SUPPORTED[backend]!r} for {backend}"
        )
    return url


_WRITES = "keyplane_writes"
_HOLDS_WRITER = "keyplane_holds_writer_lock"


@dataclass(frozen=True)
class Limits:
    """How long the database may make a request wait, and how many connections it may hold.

    The defaults suit ``keyplane serve``; ``None`` (operator commands, migrations)
    keeps the server's own defaults and waits as long as it must.
    """

    connect_seconds: float = 2.0
    # PostgreSQL's statement_timeout and idle_in_transaction_session_timeout; the time
    # SQLite waits for its write lock.
    statement_seconds: float = 5.0
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout_seconds: float = 2.0
    # A pooler in transaction mode (PgBouncer's ``pool_mode = transaction``) between
    # Keyplane and PostgreSQL: a server connection is Keyplane's for one transaction
    # only, so nothing may outlive one (see ``make_engine`` and ``db.lookups``).
    transaction_pooler: bool = False


def make_engine(
    database_url: str | URL, limits: Limits | None = None, *, transaction_pooler: bool = False
) -> Engine:
    """``transaction_pooler`` for an engine without ``limits`` (an operator's command)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, limits)
    kwargs: dict[str, Any] = {}
    if transaction_pooler:
        kwargs["connect_args"] = {"prepare_threshold": None}
    if limits is not None:
        kwargs = {
            "pool_size": limits.pool_size,
            "max_overflow": limits.max_overflow,
            "pool_timeout": limits.pool_timeout_seconds,
            "connect_args": postgresql_connect_args(limits),
        }
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, **kwargs)
    if limits is not None and limits.transaction_pooler:
        _settings_per_transaction(engine, limits)
    return engine


def _settings_per_transaction(engine: Engine, limits: Limits) -> None:
    """Behind a transaction pooler, a session's settings would stay on a server connection
    that others use next, and a startup parameter (``options``) is refused: each
    transaction sets its own timeouts, which end with it (one round trip more)."""
    settings = postgresql_server_settings(limits)
    statement = "SELECT " + ", ".join(
        f"set_config('{name}', '{value}', true)" for name, value in settings.items()
    )

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(statement)


def postgresql_server_settings(limits: Limits) -> dict[str, str]:
    """Per-session settings: no statement or lock wait outlives a request, and the server
    ends a transaction whose client went silent (it can then never commit late)."""
    statement_ms = str(int(limits.statement_seconds * 1000))
    return {
        "statement_timeout": statement_ms,
        "lock_timeout": statement_ms,
        "idle_in_transaction_session_timeout": statement_ms,
    }


def postgresql_connect_args(limits: Limits) -> dict[str, Any]:
    """libpq settings: bounded connect and statements, dead peers found within seconds."""
    options = postgresql_server_settings(limits).items()
    per_session: dict[str, Any] = {
        "options": " ".join(f"-c {name}={value}" for name, value in options),
    }
    if limits.transaction_pooler:
        # Each transaction sets them instead; and a statement psycopg prepared on one
        # server connection would be missing on the next (psycopg's own advice).
        per_session = {"prepare_threshold": None}
    return per_session | {
        "connect_timeout": max(1, math.ceil(limits.connect_seconds)),
        # A partition (packets dropped) is noticed in about 3 s instead of minutes.
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": int(limits.statement_seconds * 1000),
    }


def for_writing(engine: Engine) -> Engine:
    """The same engine and pool, but its transactions begin by taking SQLite's write lock."""
    return engine.execution_options(**{_WRITES: True})


def _sqlite_engine(url: URL, limits: Limits | None) -> Engine:
    busy_ms = int((limits.statement_seconds if limits else 60.0) * 1000)
    kwargs: dict[str, Any] = {}
    if url.database and url.database != ":memory:":
        # SQLite connections are cheap, but opening one per request is not: keep them.
        size = limits.pool_size + limits.max_overflow if limits else 5
        kwargs = {"pool_size": size, "max_overflow": 0}
        if limits is not None:
            kwargs["pool_timeout"] = limits.pool_timeout_seconds
    # Handlers run in worker threads; SQLite's own thread check would refuse them.
    engine = create_engine(
        url, connect_args={"check_same_thread": False}, hide_parameters=True, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN, so SAVEPOINT works (SQLAlchemy's
        # documented pysqlite recipe), and make SQLite behave like a server database.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if url.database and url.database != ":memory:":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    # Writers line up here: one per process waits for SQLite's lock, the others wait on
    # this lock. That one retries BEGIN IMMEDIATE every few hundred microseconds rather
    # than in SQLite's busy handler, whose sleeps grow to 100 ms: a writer of another
    # process then gets its turn promptly, instead of starving while this process's
    # threads hand the lock to each other.
    writer = threading.Lock()
    wait = busy_ms / 1000

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if not connection.get_execution_options().get(_WRITES, False):
            connection.exec_driver_sql("BEGIN")
            return
        deadline = time.monotonic() + wait
        if not writer.acquire(timeout=wait):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("busy"))
        connection.info[_HOLDS_WRITER] = True
        try:
            _begin_immediate(connection, deadline)
        except BaseException:
            _release(connection)
            raise

    def _begin_immediate(connection: Any, deadline: float) -> None:
        # On the driver's connection: a try that finds the lock taken costs microseconds,
        # not the hundred of SQLAlchemy's error handling, taken from the lock's holder.
        driver = connection.connection.dbapi_connection
        try:
            driver.execute("PRAGMA busy_timeout = 0")
            try:
                while True:
                    try:
                        driver.execute("BEGIN IMMEDIATE")
                        return
                    except sqlite3.OperationalError as error:
                        if "locked" not in str(error) or time.monotonic() > deadline:
                            raise
                    time.sleep(random.uniform(0.0001, 0.0004))  # noqa: S311 - jitter
            finally:
                driver.execute(f"PRAGMA busy_timeout = {busy_ms}")
        except sqlite3.Error as error:  # as SQLAlchemy would have raised it
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error) from None

    def _release(connection: Any) -> None:
        if connection.info.pop(_HOLDS_WRITER, False):
            writer.release()

    # Released as the transaction ends: the next writer's BEGIN IMMEDIATE may then
    # retry a moment, until the COMMIT has finished.
    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)
    return engine
