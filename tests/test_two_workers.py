"""No stale answers: a change through one server process shows on the very next verify
through another process on the same database."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.servers import create_account, keyplane_env, serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

PASSWORD = "two-workers-password"


def test_changes_through_one_process_show_on_the_next_verify_through_another(
    fresh_database_url,
):
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    create_account(env)
    with serving(env) as (one, _), serving(env) as (other, _):
        wait_until_up(one)
        wait_until_up(other)
        token = httpx.post(
            f"{one}/v1/auth/token",
            data={"grant_type": "password", "username": "alice", "password": PASSWORD},
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        def verify(full_key: str, permissions: list[str] | None = None) -> str:
            body = {"key": full_key, "permissions": permissions or []}
            answer = httpx.post(f"{other}/v1/keys/verify", json=body, headers=auth)
            return str(answer.json()["code"])

        created = httpx.post(
            f"{one}/v1/api-keys", json={"permissions": ["readApplications"]}, headers=auth
        ).json()
        key_url, old_key = f"{one}/v1/api-keys/{created['id']}", created["full_key"]
        assert verify(old_key, ["readApplications"]) == "VALID"

        httpx.patch(key_url, json={"permissions": []}, headers=auth)
        assert verify(old_key, ["readApplications"]) == "INSUFFICIENT_PERMISSIONS"

        new_key = httpx.post(f"{key_url}/rotate", json={}, headers=auth).json()["full_key"]
        assert verify(old_key) == "NOT_FOUND"
        assert verify(new_key) == "VALID"

        httpx.patch(key_url, json={"expires_at": "2001-01-01T00:00:00Z"}, headers=auth)
        assert verify(new_key) == "EXPIRED"

        httpx.delete(key_url, headers=auth)
        assert verify(new_key) == "REVOKED"
