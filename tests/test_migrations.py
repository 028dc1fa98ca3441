"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.engine import make_engine
from keyplane.db.models import Base


def test_migrations_match_the_models(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_database_is_at_the_head_revision(engine):
    assert db.migrate.current_revision(engine) == db.migrate.head_revision()


def _an_account_and_its_user(connection: Connection) -> None:
    """Account 1 and user 1, as rows of any revision since 0001."""
    connection.execute(
        text("INSERT INTO accounts (id, name, created_at) VALUES (1, 'old', CURRENT_TIMESTAMP)")
    )
    connection.execute(
        text(
            "INSERT INTO users (id, username, password_hash, is_active, created_at)"
            " VALUES (1, 'ann', 'x', true, CURRENT_TIMESTAMP)"
        )
    )


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
            (1, permission_id)
            for permission_id, _ in sorted(db.permissions.DEFAULT_CATALOG + db.permissions.RIGHTS)
        ]
    fresh.dispose()


def test_0010_gives_every_account_the_right_to_verify_and_no_key_holds_it_by_accident(
    fresh_database_url,
):
    fresh = make_engine(fresh_database_url)
    db.migrate.upgrade(fresh, "0009")
    with fresh.begin() as connection:
        for statement in (
            "INSERT INTO accounts (name, created_at) VALUES ('old', CURRENT_TIMESTAMP)",
            "INSERT INTO accounts (name, created_at) VALUES ('named', CURRENT_TIMESTAMP)",
            "INSERT INTO users (username, username_key, password_hash, is_active, "
            "token_generation, created_at) VALUES ('m', 'm', 'x', true, 0, CURRENT_TIMESTAMP)",
            "INSERT INTO permissions (account_id, id, description, created_at) "
            "VALUES (2, 'keyplane.verify', 'mine', CURRENT_TIMESTAMP)",
            "INSERT INTO api_keys (account_id, user_id, key_prefix, key_digest, enabled, "
            "created_at, updated_at) VALUES (2, 1, 'kp_x', 'd', true, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)",
            "INSERT INTO api_key_permissions (api_key_id, permission_id, account_id) "
            "VALUES (1, 'keyplane.verify', 2)",
        ):
            connection.execute(text(statement))
    db.migrate.upgrade(fresh)
    with fresh.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT account_id, description FROM permissions "
                "WHERE id = 'keyplane.verify' ORDER BY account_id"
            )
        )
        assert [tuple(row) for row in rows] == [
            (1, db.permissions.VERIFY_DESCRIPTION),
            (2, db.permissions.VERIFY_DESCRIPTION),
        ]
        held = connection.execute(text("SELECT count(*) FROM api_key_permissions")).scalar()
        assert held == 0  # a member-made grant of a customer permission is no right to verify
    fresh.dispose()


def test_0006_keeps_every_key_and_permission_link(fresh_database_url):
    fresh = make_engine(fresh_database_url)
    db.migrate.upgrade(fresh, "0005")
    with fresh.begin() as connection:
        _an_account_and_its_user(connection)
        connection.execute(
            text(
                "INSERT INTO api_keys (id, account_id, user_id, key_prefix, key_digest,"
                " created_at, updated_at) VALUES (7, 1, 1, 'kp_x', 'd', CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO permissions (account_id, id, description, created_at)"
                " VALUES (1, 'readApplications', '', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO api_key_permissions (api_key_id, permission_id, account_id)"
                " VALUES (7, 'readApplications', 1)"
            )
        )
    db.migrate.upgrade(fresh)
    with fresh.connect() as connection:
        key = connection.execute(
            text("SELECT id, enabled, external_id, meta, expiry_set_by_admin FROM api_keys")
        ).one()
        assert (key.id, bool(key.enabled), key.external_id, key.meta) == (7, True, None, None)
        assert not key.expiry_set_by_admin
        links = connection.execute(
            text("SELECT api_key_id, permission_id FROM api_key_permissions")
        )
        assert [tuple(row) for row in links] == [(7, "readApplications")]
        generation = connection.execute(text("SELECT token_generation FROM users")).scalar()
        assert generation == 0
    fresh.dispose()


def test_0007_counts_keys_switched_off_before_as_an_admins(fresh_database_url):
    fresh = make_engine(fresh_database_url)
    db.migrate.upgrade(fresh, "0006")
    with fresh.begin() as connection:
        _an_account_and_its_user(connection)
        for key_id, enabled in ((1, True), (2, False)):
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, account_id, user_id, key_prefix, key_digest,"
                    " created_at, updated_at, enabled) VALUES (:id, 1, 1, 'kp_x', :digest,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :enabled)"
                ),
                {"id": key_id, "digest": f"d{key_id}", "enabled": enabled},
            )
    db.migrate.upgrade(fresh)
    with fresh.connect() as connection:
        rows = connection.execute(text("SELECT id, disabled_by FROM api_keys ORDER BY id"))
        assert [tuple(row) for row in rows] == [(1, None), (2, "admin")]
    fresh.dispose()


def test_0008_gives_every_user_keys_and_keeps_names_that_collide_apart(fresh_database_url):
    fresh = make_engine(fresh_database_url)
    db.migrate.upgrade(fresh, "0007")
    with fresh.begin() as connection:
        for user_id, username in ((1, "Bob"), (2, "bob"), (3, "b0b"), (4, "carol")):
            connection.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, is_active, created_at)"
                    " VALUES (:id, :name, 'x', true, CURRENT_TIMESTAMP)"
                ),
                {"id": user_id, "name": username},
            )
    db.migrate.upgrade(fresh)
    with fresh.connect() as connection:
        rows = connection.execute(
            text("SELECT username, username_key, lookalike_key FROM users ORDER BY id")
        )
        assert [tuple(row) for row in rows] == [
            ("Bob", "bob", "bob"),
            ("bob", "bob#2", "bob#2"),
            ("b0b", "b0b", "bob#3"),
            ("carol", "carol", "carol"),
        ]
    with fresh.begin() as connection:
        session = Session(bind=connection)
        # Each signs in by its exact name; a case the names share finds the oldest.
        assert [db.users.by_username(session, n).id for n in ("Bob", "bob", "b0b", "BOB")] == [
            1,
            2,
            3,
            1,
        ]
    fresh.dispose()


def test_every_migration_goes_down_and_up_again(fresh_database_url):
    """Rolling back is possible from any version: each revision's downgrade undoes it
    and the upgrade after it gives the same schema as the models."""
    engine = make_engine(fresh_database_url)
    try:
        db.migrate.upgrade(engine)
        head = db.migrate.head_revision()
        assert head is not None
        for revision in range(int(head) - 1, 0, -1):
            db.migrate.downgrade(engine, f"{revision:04d}")
            assert db.migrate.current_revision(engine) == f"{revision:04d}"
        db.migrate.downgrade(engine, "base")
        assert db.migrate.current_revision(engine) is None
        db.migrate.upgrade(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()
