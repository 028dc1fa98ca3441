"""The operator CLI, run as a user would: ``keyplane create-account`` and ``keyplane serve``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx

KEYPLANE = [sys.executable, "-m", "keyplane.cli"]


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return env | {"KEYPLANE_DATABASE_URL": database_url} | extra


def test_create_account_migrates_a_brand_new_database_and_prints_ids(fresh_database_url):
    result = subprocess.run(
        [*KEYPLANE, "create-account", "acme", "--admin", "alice"],
        env=_env(fresh_database_url, KEYPLANE_ADMIN_PASSWORD="alice-password-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"account_id": 1, "user_id": 1}

    again = subprocess.run(
        [*KEYPLANE, "create-account", "other", "--admin", "alice"],
        env=_env(fresh_database_url),
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
        env=_env(fresh_database_url, KEYPLANE_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KEYPLANE_SECRET_KEY" in result.stderr


def test_first_serve_creates_a_default_admin_who_can_log_in(fresh_database_url):
    port = _free_port()
    server = subprocess.Popen(
        [*KEYPLANE, "serve", "--port", str(port)],
        env=_env(fresh_database_url),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        password = _read_bootstrap_password(server)
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base)
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
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _read_bootstrap_password(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        match = re.search(r"password: (\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("keyplane serve printed no admin password")


def _wait_until_up(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("keyplane serve did not come up")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
