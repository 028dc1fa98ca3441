"""Schema migrations (Alembic), applied on start and by the operator CLI.

Any number of processes may start at once on an empty database: each migrates under
a lock (a transaction-scoped advisory lock on PostgreSQL, the write lock taken at
``BEGIN IMMEDIATE`` on SQLite), so the first one migrates and the others, once they
hold the lock in turn, find the schema current and go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from keyplane.db.engine import for_writing
from keyplane.db.errors import KeyplaneError

# pg_advisory_xact_lock's key for "the schema is being migrated" ("kpmigrat" in ASCII).
MIGRATION_LOCK = 0x6B706D6967726174


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "keyplane.db:migrations")
    return config


def upgrade(
    engine: Engine, revision: str = "head", then: Callable[[Connection], None] | None = None
) -> None:
    """Migrate, then run ``then`` in the same locked transaction (first-start setup)."""
    with _locked(engine) as (connection, config):
        command.upgrade(config, revision)
        if then is not None:
            then(connection)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo the migrations after ``revision`` (to roll back one version of Keyplane: run
    by the newer version, which knows how to undo its own)."""
    script = ScriptDirectory.from_config(_config())
    if revision not in {"base", *(known.revision for known in script.walk_revisions())}:
        raise KeyplaneError(f"no schema revision {revision!r} (`keyplane db current` shows it)")
    try:
        with _locked(engine) as (_, config):
            command.downgrade(config, revision)
    except CommandError as error:  # above the database's own revision, say
        raise KeyplaneError(f"cannot go down to {revision}: {error}") from None


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[tuple[Connection, Config]]:
    """One transaction that holds the migration lock, for Alembic to migrate in."""
    config = _config()
    with for_writing(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        yield connection, config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def is_current(connection: Connection) -> bool:
    """Whether the database is at the newest revision this code knows."""
    return MigrationContext.configure(connection).get_current_revision() == head_revision()
