"""Failure is answered, not hung: a database that is cut, locked or full gives a 503 with
``Retry-After`` within the request budget (5 s), ``/readyz`` says so, the service
recovers by itself once the database is back, and a request that failed is never
committed afterwards."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from keyplane.db.engine import make_engine
from tests.faults import Proxy, descendants, disk_full, largest_file
from tests.live import Live, live_server

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

BUDGET = 5.0
SLACK = 0.75  # scheduling on a shared 2-core machine


def _timed(live: Live, method: str, path: str, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with live.client() as client:
        response = client.request(method, path, **kwargs)
    return response, time.monotonic() - started


def _assert_503(response: httpx.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert seconds <= BUDGET + SLACK, seconds


def _patch_in_background(live: Live, key_id: int, n: int) -> tuple[list, list[threading.Thread]]:
    answers: list[tuple[httpx.Response, float]] = []

    def patch(i: int) -> None:
        body = {"description": f"sent before the cut {i}"}
        answers.append(
            _timed(live, "PATCH", f"/v1/api-keys/{key_id}", json=body, headers=live.auth)
        )

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return answers, threads


def _recovers(live: Live, key_id: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with live.client() as client:
            if client.get(f"/v1/api-keys/{key_id}", headers=live.auth).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("the service did not recover")


def test_a_cut_database_is_503_then_recovers_and_nothing_commits_late(db_kind, fresh_database_url):
    if db_kind != "postgresql":
        pytest.skip("a network cut is PostgreSQL's failure; SQLite's are below")
    real = make_url(fresh_database_url)
    direct = make_engine(fresh_database_url)
    with (
        Proxy(real.port or 5432) as proxy,
        live_server(real.set(port=proxy.port).render_as_string(hide_password=False)) as live,
    ):
        key = live.create_key(description="before the cut")
        # The key's row is held, so these PATCHes are inside the database when it is cut.
        with direct.connect() as holder:
            holding = holder.begin()
            holder.execute(
                text("SELECT id FROM api_keys WHERE id = :id FOR UPDATE"), {"id": key["id"]}
            )
            answers, threads = _patch_in_background(live, key["id"], 4)
            time.sleep(1.0)
            proxy.cut()
            holding.commit()  # the PATCHes may now go on, but their next steps are held
        for method, path, kwargs in [
            ("GET", "/v1/api-keys", {"headers": live.auth}),
            (
                "POST",
                "/v1/keys/verify",
                {"json": {"key": key["full_key"]}, "headers": live.verifier},
            ),
        ]:
            _assert_503(*_timed(live, method, path, **kwargs))
        ready, seconds = _timed(live, "GET", "/readyz")
        assert ready.status_code == 503 and seconds <= BUDGET + SLACK
        assert ready.json()["status"] == "not ready"
        for thread in threads:
            thread.join(30)
        assert len(answers) == 4
        for answer in answers:
            _assert_503(*answer)
        # A newer change, made straight in the database while the service is cut off.
        time.sleep(BUDGET + 1)  # the server ends the sessions whose client went silent
        with direct.begin() as connection:
            connection.execute(
                text("UPDATE api_keys SET description = 'changed after the cut' WHERE id = :id"),
                {"id": key["id"]},
            )
        proxy.restore()  # what was sent during the cut arrives now, late
        _recovers(live, key["id"])
        assert live.get_key(key["id"])["description"] == "changed after the cut"
        with live.client() as client:
            assert client.get("/readyz").status_code == 200
            patched = client.patch(
                f"/v1/api-keys/{key['id']}", json={"description": "after"}, headers=live.auth
            )
        assert patched.status_code == 200
    direct.dispose()


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def test_sqlite_locked_writes_are_503_verify_goes_on_nothing_commits_late(
    db_kind, fresh_database_url
):
    if db_kind != "sqlite":
        pytest.skip("SQLite's write lock")
    with live_server(fresh_database_url) as live:
        key = live.create_key(description="before the lock")
        # Another program holds SQLite's write lock for longer than the budget.
        other = sqlite3.connect(_sqlite_path(fresh_database_url), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        answers, threads = _patch_in_background(live, key["id"], 4)
        verdict, seconds = _timed(
            live, "POST", "/v1/keys/verify", json={"key": key["full_key"]}, headers=live.verifier
        )
        assert verdict.json()["code"] == "VALID" and seconds < 1  # readers never wait
        ready, seconds = _timed(live, "GET", "/readyz")
        assert ready.status_code == 503 and seconds <= BUDGET + SLACK
        for thread in threads:
            thread.join(30)
        for answer in answers:
            _assert_503(*answer)
        other.execute("ROLLBACK")
        other.close()
        time.sleep(1)  # any write still waiting would commit now, if it were allowed to
        assert live.get_key(key["id"])["description"] == "before the lock"
        with live.client() as client:
            assert client.get("/readyz").status_code == 200


def test_sqlite_disk_full_is_503_and_not_ready_then_recovers(db_kind, fresh_database_url):
    if db_kind != "sqlite":
        pytest.skip("SQLite's disk")
    path = _sqlite_path(fresh_database_url)
    with live_server(fresh_database_url) as live:
        key = live.create_key(description="before the disk filled")
        workers = descendants(live.server.pid)
        # A write goes to the end of the write-ahead log first: no byte past its size
        # may be written (the database file may be larger, and take bytes up to its own
        # size as if the disk had room).
        wal = path.with_name(path.name + "-wal")
        with disk_full(workers, allowed_bytes=largest_file(wal) or largest_file(path)):
            answer = _timed(
                live,
                "PATCH",
                f"/v1/api-keys/{key['id']}",
                json={"description": "while full"},
                headers=live.auth,
            )
            _assert_503(*answer)
            ready, _ = _timed(live, "GET", "/readyz")
            assert ready.status_code == 503
            assert ready.json()["reason"] == "the database does not take writes"
            verdict, _ = _timed(
                live,
                "POST",
                "/v1/keys/verify",
                json={"key": key["full_key"]},
                headers=live.verifier,
            )
            assert verdict.json()["code"] == "VALID"
        _recovers(live, key["id"])
        with live.client() as client:
            assert client.get("/readyz").status_code == 200
        assert live.get_key(key["id"])["description"] == "before the disk filled"
