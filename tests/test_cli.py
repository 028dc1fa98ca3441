"""The operator CLI, run as a user would: ``keyplane create-account`` and ``keyplane serve``."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db.crypto import Secrets
from db.engine import make_engine
from db.models import Account, AuditEvent, User
from tests.conftest import TEST_SECRET
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


def test_without_a_secret_sqlite_keeps_a_generated_one_and_a_server_database_refuses(
    db_kind, fresh_database_url
):
    """No secret printed anywhere is ever accepted: there is no default to forge with."""
    if db_kind == "postgresql":
        result = subprocess.run(
            [*KEYPLANE, "serve"],
            env=keyplane_env(fresh_database_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert "KEYPLANE_SECRET_KEY is not set" in result.stderr
        return
    secret_file = Path(make_url(fresh_database_url).database + ".secret")
    tokens = []
    for _ in range(2):  # the second start reuses the first's secret
        with serving(keyplane_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD=PASSWORD)) as (
            base,
            _,
        ):
            wait_until_up(base)
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            tokens.append(_login(base))
            assert _me(base, tokens[0]).status_code == 200
            forged = Secrets.derive(OLD_PRINTED_SECRET).issue_user_token(1, timedelta(hours=1))
            assert _me(base, forged).status_code == 401


def test_a_short_secret_is_refused(fresh_database_url):
    result = subprocess.run(
        [*KEYPLANE, "serve"],
        env=keyplane_env(fresh_database_url, KEYPLANE_SECRET_KEY="too-short"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


def test_a_previous_secret_is_accepted_while_it_is_configured(fresh_database_url):
    old, new = "the-old-server-secret-" + "o" * 20, "the-new-server-secret-" + "n" * 20
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=old, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    with serving(env) as (base, _):
        wait_until_up(base)
        token = _login(base)
        auth = {"Authorization": f"Bearer {token}"}
        full_key = httpx.post(f"{base}/v1/api-keys", json={}, headers=auth).json()["full_key"]
    rotated = env | {"KEYPLANE_SECRET_KEY": new, "KEYPLANE_PREVIOUS_SECRET_KEYS": old}
    with serving(rotated) as (base, _):
        wait_until_up(base)
        assert _me(base, token).status_code == 200
        assert _verify(base, full_key) == "VALID"  # and its digest is renewed with the new secret
        time.sleep(6)  # the flusher writes the renewal within its 5 s period
    with serving(env | {"KEYPLANE_SECRET_KEY": new}) as (base, _):
        wait_until_up(base)
        assert _me(base, token).status_code == 401  # the old secret's tokens are gone
        assert _verify(base, full_key) == "VALID"  # the key moved to the new secret


PASSWORD = "cli-admin-password-1"
# The value the development default used to be: printed in the repository's history.
OLD_PRINTED_SECRET = "keyplane-development-secret-do-not-use-in-production"


def _login(base: str) -> str:
    form = {"grant_type": "password", "username": "admin", "password": PASSWORD}
    response = httpx.post(f"{base}/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _me(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/users/me", headers={"Authorization": f"Bearer {token}"})


def _verify(base: str, full_key: str) -> str:
    return str(httpx.post(f"{base}/v1/keys/verify", json={"key": full_key}).json()["code"])


def test_first_serve_creates_a_default_admin_who_can_log_in(fresh_database_url):
    with serving(keyplane_env(fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET)) as (
        base,
        server,
    ):
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
