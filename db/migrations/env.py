"""Alembic environment: run by ``db.migrate`` with a connection, or by the alembic CLI."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from keyplane.db.engine import DEFAULT_DATABASE_URL, make_engine
from keyplane.db.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "KEYPLANE_DATABASE_URL", DEFAULT_DATABASE_URL
    )
    with make_engine(url).begin() as new_connection:
        _run(new_connection)
