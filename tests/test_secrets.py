"""A full key, a password or a token never reaches the database or the logs."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from keyplane import db
from keyplane.app import create_app
from keyplane.db.crypto import Secrets
from keyplane.db.engine import make_engine
from keyplane.db.models import Base, Role
from keyplane.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import Factory

NEW_PASSWORD = "a-brand-new-password-41"


def test_the_whole_lifecycle_leaves_no_secret_in_the_database_or_logs(fresh_database_url, caplog):
    engine = make_engine(fresh_database_url)
    db.migrate.upgrade(engine)
    factory = Factory.from_engine(engine, Secrets.derive(TEST_SECRET))
    admin = factory.user(factory.account(), Role.ADMIN)
    app = create_app(Settings(database_url=fresh_database_url, secret_key=TEST_SECRET))

    secrets: list[str] = [NEW_PASSWORD]
    with caplog.at_level(logging.DEBUG), app.test_client() as client:
        auth = factory.auth(admin)
        secrets.append(auth["Authorization"].removeprefix("Bearer "))
        newbie_name = client.post(
            "/v1/users", json={"username": "newbie", "password": NEW_PASSWORD}, headers=auth
        ).json()["username"]
        token = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": newbie_name, "password": NEW_PASSWORD},
        ).json()["access_token"]
        secrets.append(token)
        newbie = {"Authorization": f"Bearer {token}"}
        created = client.post("/v1/api-keys", json={"description": "leak?"}, headers=newbie).json()
        secrets.append(created["full_key"])
        # Use the key as a credential (refused, but looked up), then its wrong twin.
        client.get("/v1/api-keys", headers={"X-API-Key": created["full_key"]})
        client.patch(
            f"/v1/api-keys/{created['id']}",
            json={"description": created["full_key"][:8]},
            headers=newbie,
        )
        verifier = factory.verifier(1)
        secrets.append(verifier["Authorization"].removeprefix("Bearer "))
        client.post("/v1/keys/verify", json={"key": created["full_key"]}, headers=verifier)
        rotated = client.post(
            f"/v1/api-keys/{created['id']}/rotate",
            json={"grace_period_seconds": 60},
            headers=newbie,
        ).json()
        secrets.append(rotated["full_key"])
        for full_key in (created["full_key"], rotated["full_key"]):
            client.post(
                "/v1/keys/verify", json={"key": full_key, "permissions": ["x"]}, headers=verifier
            )
        client.delete(f"/v1/api-keys/{created['id']}", headers=newbie)
        # Failed logins and validation errors must not echo what was sent either.
        client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": "newbie", "password": created["full_key"]},
        )
        client.post(
            "/v1/api-keys", json={"description": {"k": created["full_key"]}}, headers=newbie
        )

    assert all(secrets), secrets
    assert len(caplog.records) > 0  # the capture did see the run's logging
    log_text = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    stored = _everything_stored(engine)
    engine.dispose()
    for secret in secrets:
        assert secret not in log_text
        assert secret.encode() not in stored


def _everything_stored(engine) -> bytes:
    """Every row of every table, and for SQLite the database files themselves."""
    dump = []
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in connection.execute(select(table))]
    content = "\n".join(dump).encode()
    url = make_url(str(engine.url))
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-journal"):
            path = Path(f"{url.database}{suffix}")
            if path.exists():
                content += path.read_bytes()
    return content
