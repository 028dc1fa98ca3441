"""Test fixtures: a real database per run (SQLite or PostgreSQL), emptied after each test.

Run once per database: ``pytest --db sqlite`` and ``pytest --db postgresql`` (``make
test`` runs both). PostgreSQL gets a freshly created database for the run, dropped at
the end. The app is built once per run and serves every in-process test; its requests
commit, and each test's rows are deleted when it ends. Tests that need a database of
their own (migrations, several server processes) ask for ``fresh_database_url``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from keyplane import db
from keyplane.app import Keyplane, create_app
from keyplane.db.crypto import Secrets
from keyplane.db.engine import make_engine
from keyplane.db.models import Base
from keyplane.settings import Settings
from tests.factories import Factory

POSTGRES_ADMIN_URL = os.environ.get(
    "KEYPLANE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Each database's run has a Redis database of its own (both halves may run at once).
REDIS_URLS = {
    "sqlite": os.environ.get("KEYPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"),
    "postgresql": os.environ.get("KEYPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
}
TEST_SECRET = "test-server-secret-that-is-long-enough-0123456789"
METRICS_TOKEN = "test-metrics-token-of-some-length"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the database the whole suite runs on (default sqlite)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"keyplane database: {config.getoption('--db')}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("--db") != "postgresql":
        return
    probe = create_engine(POSTGRES_ADMIN_URL)
    try:
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        reason = f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).render_as_string()} is unreachable"
        if os.environ.get("CI"):
            pytest.exit(f"{reason} (CI needs it): {error.orig}", returncode=1)
        pytest.exit(
            f"PostgreSQL half SKIPPED: {reason}. Start PostgreSQL on 127.0.0.1:5432 "
            "(user postgres, trust auth) or point KEYPLANE_TEST_POSTGRES_URL at a server "
            "where the user may create databases, then run `make test` again.",
            returncode=0,
        )
    finally:
        probe.dispose()


@contextmanager
def new_database(kind: str, directory: Path) -> Iterator[str]:
    """A new, empty, unmigrated database of ``kind`` (a file in ``directory`` for
    SQLite), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / f'keyplane-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"keyplane_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def db_kind(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--db"))


def empty_redis(url: str) -> str:
    """``url``'s Redis database, emptied for rate-limit windows (the test is skipped if
    Redis is not there, except in CI, which needs it)."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError as error:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {url} is unreachable (CI needs it): {error}")
        pytest.skip(f"Redis at {url} is unreachable: start redis-server on 127.0.0.1:6379")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_url(db_kind: str) -> str:
    return empty_redis(REDIS_URLS[db_kind])


@pytest.fixture(scope="session")
def database_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with new_database(db_kind, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture
def fresh_database_url(db_kind: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty, unmigrated database of the run's kind, for tests that commit."""
    with new_database(db_kind, tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like ``fresh_database_url``, shared by one module's tests (a live server's)."""
    with new_database(db_kind, tmp_path_factory.mktemp("module-db")) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    db.migrate.upgrade(engine)  # the schema, once per run, by the real migrations
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _clean_database(engine: Engine) -> Iterator[None]:
    """Each test starts from an empty (migrated) database: requests really commit.

    Tests commit for real, as the service does, because the data plane reads on
    connections of its own: a test's uncommitted transaction would be invisible to it.
    """
    yield
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET,
        validate_responses=True,
        metrics_token=METRICS_TOKEN,
    )


@pytest.fixture(scope="session")
def app(settings: Settings, engine: Engine) -> Keyplane:
    """Built once a run (Connexion takes half a second to read the spec)."""
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: Keyplane) -> Iterator[TestClient]:
    """One client for the run: the app starts (its lifespan) once, as a worker does."""
    with app.test_client() as client:
        yield client


@pytest.fixture
def factory(engine: Engine, settings: Settings) -> Factory:
    return Factory.from_engine(engine, Secrets.derive(settings.secret_key))
