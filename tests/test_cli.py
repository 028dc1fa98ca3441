"""The operator CLI, run as a user would: ``keyplane create-account`` and ``keyplane serve``."""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx

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
