"""Backup and restore as the operator runs them: ``keyplane db backup`` of a live server
under load, ``keyplane db restore`` into a new database, and every key verifies as it
did before (the procedure of deploy/README.md, secret included)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from keyplane.db.engine import make_engine
from keyplane.db.models import ApiKey, AuditEvent
from tests.conftest import TEST_SECRET, new_database
from tests.servers import KEYPLANE, create_account, keyplane_env, serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

PASSWORD = "backup-admin-password"


def _keyplane(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYPLANE, *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _env(db_kind: str, url: str) -> dict[str, str]:
    """SQLite keeps its generated secret beside the database; a server database is given
    one (the procedure for each: deploy/README.md)."""
    extra = {"KEYPLANE_ADMIN_PASSWORD": PASSWORD}
    if db_kind == "postgresql":
        extra["KEYPLANE_SECRET_KEY"] = TEST_SECRET
    return keyplane_env(url, **extra)


def _login(base: str) -> dict[str, str]:
    answer = httpx.post(
        f"{base}/v1/auth/token",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD},
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _verify(base: str, auth: dict[str, str], full_key: str) -> str:
    answer = httpx.post(f"{base}/v1/keys/verify", json={"key": full_key}, headers=auth)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["code"])


def test_a_backup_of_a_loaded_server_restores_with_every_key_as_before(
    db_kind, fresh_database_url, tmp_path
):
    env = _env(db_kind, fresh_database_url)
    create_account(env)
    backup = tmp_path / "keyplane.backup"
    made: dict[str, str] = {}  # full key -> its code at the backup
    during: list[str] = []  # keys made while the backup ran
    statuses: list[int] = []
    with serving(env, workers=2) as (base, _):
        wait_until_up(base)
        auth = _login(base)
        for number in range(30):
            created = httpx.post(f"{base}/v1/api-keys", json={}, headers=auth).json()
            made[created["full_key"]] = "VALID"
            if number % 5 == 0:
                httpx.delete(f"{base}/v1/api-keys/{created['id']}", headers=auth)
                made[created["full_key"]] = "REVOKED"

        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
                while not stop.is_set():
                    created = client.post("/v1/api-keys", json={"description": "during"})
                    statuses.append(created.status_code)
                    if created.status_code == 201:
                        during.append(created.json()["full_key"])
                    answer = client.post("/v1/keys/verify", json={"key": next(iter(made))})
                    statuses.append(answer.status_code)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(0.5)
            done = _keyplane(env, "db", "backup", str(backup))
            time.sleep(0.5)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        assert done.returncode == 0, done.stderr
        assert "the server secret is not in it" in done.stdout
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # password hashes, the trail
        assert statuses and all(status < 500 for status in statuses), sorted(set(statuses))
        assert during, "no write landed while the backup ran"

    with new_database(db_kind, tmp_path) as restored_url:
        restored = _env(db_kind, restored_url)
        if db_kind == "sqlite":  # the secret travels beside the backup, never in it
            old, new = make_url(fresh_database_url).database, make_url(restored_url).database
            shutil.copy2(f"{old}.secret", f"{new}.secret")
        back = _keyplane(restored, "db", "restore", str(backup))
        assert back.returncode == 0, back.stderr
        assert back.stdout.startswith(f"restored from {backup}: schema revision ")

        engine = make_engine(restored_url)
        try:
            with Session(engine) as session:
                kept = set(session.scalars(select(ApiKey.id)))
                created_events = set(
                    session.scalars(
                        select(AuditEvent.target_id).where(AuditEvent.action == "key.created")
                    )
                )
        finally:
            engine.dispose()
        # One moment's copy: each key that is there came with its audit event, and the
        # keys that were made under load are there up to some point, not in pieces.
        assert {str(key) for key in kept} == created_events
        assert len(kept) >= len(made)

        with serving(restored, workers=2) as (base, _):
            wait_until_up(base)
            auth = _login(base)
            for full_key, code in made.items():
                assert _verify(base, auth, full_key) == code
            landed = [_verify(base, auth, full_key) for full_key in during]
            assert set(landed) <= {"VALID", "NOT_FOUND"}
            assert landed.count("VALID") == len(kept) - len(made)


def test_backup_and_restore_refuse_what_would_lose_data(db_kind, fresh_database_url, tmp_path):
    env = _env(db_kind, fresh_database_url)
    create_account(env)
    backup = tmp_path / "first.backup"
    assert _keyplane(env, "db", "backup", str(backup)).returncode == 0

    again = _keyplane(env, "db", "backup", str(backup))
    assert (again.returncode, again.stderr) == (
        1,
        f"keyplane: {backup} exists: a backup goes to a new path\n",
    )
    into_itself = _keyplane(env, "db", "restore", str(backup))
    assert into_itself.returncode == 1 and "restore into a new" in into_itself.stderr
    assert into_itself.stderr.count("\n") == 1

    with new_database(db_kind, tmp_path) as other_url:
        other = _env(db_kind, other_url)
        nothing = _keyplane(other, "db", "restore", str(tmp_path / "missing"))
        assert nothing.stderr == f"keyplane: no backup at {tmp_path / 'missing'}\n"
        junk = tmp_path / "junk"
        junk.write_text("not a backup\n")
        refused = _keyplane(other, "db", "restore", str(junk))
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        # Nothing half-made: the new database is still empty and restores afterwards.
        assert _keyplane(other, "db", "restore", str(backup)).returncode == 0
        listed = _keyplane(other, "accounts", "list", "--json")
        assert listed.returncode == 0 and '"acme"' in listed.stdout
        if db_kind == "sqlite":
            assert not list(Path(make_url(other_url).database or "").parent.glob(".*.partial"))


def test_backup_and_restore_refuse_to_go_through_a_transaction_pooler(fresh_database_url, tmp_path):
    """pg_dump's session settings would stay on a pooled server connection."""
    create_account(
        keyplane_env(
            fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
        )
    )
    env = keyplane_env(fresh_database_url, KEYPLANE_DB_POOLER="transaction")
    for argv in (["db", "backup", str(tmp_path / "b")], ["db", "restore", str(tmp_path / "b")]):
        refused = _keyplane(env, *argv)
        assert refused.returncode == 2
        assert refused.stderr.startswith("keyplane: back up and restore on PostgreSQL itself")
        assert refused.stderr.count("\n") == 1
    assert not (tmp_path / "b").exists()
