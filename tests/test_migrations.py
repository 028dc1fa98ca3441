"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

import db.migrate
import db.permissions
from db.engine import make_engine
from db.models import Base


def test_migrations_match_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_database_is_at_the_head_revision(engine):
    assert db.migrate.current_revision(engine) == db.migrate.head_revision()


def test_0002_gives_existing_accounts_the_default_catalog(fresh_database_url):
    fresh = make_engine(fresh_database_url)
    db.migrate.upgrade(fresh, "0001")
    with fresh.begin() as connection:
        connection.execute(
            text("INSERT INTO accounts (name, created_at) VALUES ('old', CURRENT_TIMESTAMP)")
        )
    db.migrate.upgrade(fresh)
    with fresh.connect() as connection:
        rows = connection.execute(text("SELECT account_id, id FROM permissions ORDER BY id"))
        assert [tuple(row) for row in rows] == [
            (1, permission_id) for permission_id, _ in db.permissions.DEFAULT_CATALOG
        ]
    fresh.dispose()
