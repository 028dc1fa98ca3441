"""Schema migrations (Alembic), applied on start and by the operator CLI."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "db:migrations")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def is_current(connection: Connection) -> bool:
    """Whether the database is at the newest revision this code knows."""
    return MigrationContext.configure(connection).get_current_revision() == head_revision()
