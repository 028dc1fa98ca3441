"""One transaction per request: a failure mid-request leaves nothing behind."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.app import create_app
from keyplane.db.crypto import Secrets
from keyplane.db.engine import make_engine
from keyplane.db.models import ApiKey, Role
from keyplane.handlers import api_keys as key_handlers
from keyplane.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import Factory


def test_an_error_after_the_write_rolls_the_write_back(client, factory, monkeypatch):
    admin = factory.user(factory.account(), Role.ADMIN)
    before = factory.count_keys()

    def fail_after_writing(key, **kwargs):
        assert key.id is not None  # the INSERT has been flushed
        raise RuntimeError("boom after the write")

    monkeypatch.setattr(key_handlers, "detail", fail_after_writing)
    response = client.post(
        "/v1/api-keys", json={"description": "doomed"}, headers=factory.auth(admin)
    )
    assert response.status_code == 500
    assert factory.count_keys() == before


def test_with_real_commits_a_failed_request_writes_nothing_and_a_good_one_persists(
    fresh_database_url, monkeypatch
):
    engine = make_engine(fresh_database_url)
    db.migrate.upgrade(engine)
    sessions_factory = Factory.from_engine(engine, Secrets.derive(TEST_SECRET))
    admin = sessions_factory.user(sessions_factory.account(), Role.ADMIN)
    app = create_app(Settings(database_url=fresh_database_url, secret_key=TEST_SECRET))
    with app.test_client() as client:
        created = client.post(
            "/v1/api-keys", json={"description": "kept"}, headers=sessions_factory.auth(admin)
        )
        assert created.status_code == 201
        monkeypatch.setattr(key_handlers, "detail", lambda key, **kw: 1 / 0)
        failed = client.post(
            "/v1/api-keys", json={"description": "doomed"}, headers=sessions_factory.auth(admin)
        )
        assert failed.status_code == 500
    with Session(engine) as session:
        descriptions = session.scalars(select(ApiKey.description)).all()
    assert descriptions == ["kept"]
    engine.dispose()
