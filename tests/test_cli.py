"""The operator CLI, run as a user would: ``keyplane create-account`` and ``keyplane serve``."""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.crypto import Secrets
from db.engine import make_engine
from db.models import Account, AuditEvent, User
from tests.factories import Factory
from tests.servers import KEYPLANE, keyplane_env, serving, wait_until_up


def test_create_account_migrates_a_brand_new_database_and_prints_ids(fresh_database_url):
    result = subprocess.run(
        [*KEYPLANE, "create-account", "acme", "--admin", "alice"],
        env=keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"account_id": 1, "user_id": 1}

    again = subprocess.run(
        [*KEYPLANE, "create-account", "other", "--admin", "alice"],
        env=keyplane_env(fresh_database_url),
        input="another-password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert "Username already taken" in again.stderr


def test_production_refuses_the_default_secret(fresh_database_url):
    result = subprocess.run(
        [*KEYPLANE, "serve"],
        env=keyplane_env(fresh_database_url, KEYPLANE_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEYPLANE_SECRET_KEY" in result.stderr


def test_first_serve_creates_a_default_admin_who_can_log_in(fresh_database_url):
    with serving(keyplane_env(fresh_database_url)) as (base, server):
        password = _read_bootstrap_password(server)
        wait_until_up(base)
        token = httpx.post(
            f"{base}/v1/auth/token",
            data={"grant_type": "password", "username": "admin", "password": password},
        )
        assert token.status_code == 200
        me = httpx.get(
            f"{base}/v1/users/me",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert me.json()["accounts"] == [{"id": 1, "name": "default", "role": "admin"}]


def _read_bootstrap_password(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        match = re.search(r"password: (\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("keyplane serve printed no admin password")


def _keyplane(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYPLANE, *args],
        env=keyplane_env(database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_current_and_upgrade(fresh_database_url):
    behind = _keyplane(fresh_database_url, "db", "current")
    assert behind.returncode == 1
    assert json.loads(behind.stdout)["current"] is None
    upgraded = _keyplane(fresh_database_url, "db", "upgrade")
    assert upgraded.returncode == 0
    status = json.loads(upgraded.stdout)
    assert status["current"] == status["head"] is not None
    assert _keyplane(fresh_database_url, "db", "current").returncode == 0


def test_keys_list_and_revoke_for_incidents(fresh_database_url):
    _keyplane(fresh_database_url, "create-account", "acme", "--admin", "alice")
    engine = make_engine(fresh_database_url)
    factory = Factory.from_engine(engine, Secrets.derive("any-secret-for-this-test-000000000"))
    with Session(engine) as session:
        account, user = session.get(Account, 1), session.get(User, 1)
    first, _ = factory.api_key(user, account, description="one")
    second, _ = factory.api_key(user, account, description="two")

    listed = _keyplane(fresh_database_url, "keys", "list", "--account", "1")
    assert listed.returncode == 0
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(k["id"], k["description"], k["status"]) for k in lines] == [
        (second.id, "two", "active"),
        (first.id, "one", "active"),
    ]

    revoked = _keyplane(fresh_database_url, "keys", "revoke", str(first.id))
    assert revoked.returncode == 0
    assert json.loads(revoked.stdout)["status"] == "revoked"
    assert factory.stored_key(first.id).revoked_at is not None
    with Session(engine) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "key.revoked")).one()
        assert (event.actor_type, event.target_id) == ("operator", str(first.id))

    missing = _keyplane(fresh_database_url, "keys", "revoke", "999")
    assert missing.returncode == 1
    assert "API key not found" in missing.stderr
    engine.dispose()
