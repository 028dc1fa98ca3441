"""``/healthz`` (no database) and ``/readyz`` (database reachable, schema current)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from keyplane import db
from keyplane.app import create_app
from keyplane.db.engine import make_engine
from keyplane.settings import Settings
from tests.conftest import TEST_SECRET


class TestLive:
    def test_200_without_touching_the_database(self, app, client):
        statements: list[str] = []
        engine = app.service.engine
        listener = lambda *a: statements.append(a[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        lookups = app.service.runtime.lookups.queries
        try:
            response = client.get("/healthz")
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert statements == []
        assert app.service.runtime.lookups.queries == lookups


class TestReady:
    def test_200_on_a_current_database(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}

    def test_503_while_migrations_are_pending(self, fresh_database_url):
        engine = make_engine(fresh_database_url)
        db.migrate.upgrade(engine, "0001")
        engine.dispose()
        app = create_app(
            Settings(
                database_url=fresh_database_url, secret_key=TEST_SECRET, validate_responses=True
            )
        )
        with app.test_client() as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "reason": "the database schema is not current",
        }

    def test_503_when_the_database_does_not_answer(self, tmp_path: Path):
        unreachable = f"sqlite:///{tmp_path / 'no-such-dir' / 'keyplane.db'}"
        app = create_app(
            Settings(database_url=unreachable, secret_key=TEST_SECRET, validate_responses=True)
        )
        with app.test_client() as client:
            assert client.get("/healthz").status_code == 200
            response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "reason": "the database does not answer"}
