"""Concurrent clients against a live server with 2 workers: no 5xx, no lost or mixed write.

Every operation that writes is raced here on the database of the run (SQLite or
PostgreSQL), through real HTTP connections, as users race it.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import random
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from typing import ClassVar

import pytest

from keyplane.db.permissions import VERIFY
from tests.live import (
    CATALOG,
    Answer,
    Live,
    LoadClient,
    Tally,
    live_server,
    probe,
    run,
    timed,
)

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

# The mixed-traffic soak: 30 s by default; longer with KEYPLANE_SOAK_SECONDS.
SOAK_SECONDS = float(os.environ.get("KEYPLANE_SOAK_SECONDS", "30"))
LOGIN_LIMIT = 10


@pytest.fixture(scope="module")
def live(module_database_url):
    with live_server(module_database_url, KEYPLANE_LOGIN_MAX_FAILURES=str(LOGIN_LIMIT)) as live:
        yield live


def _v1_body(i: int) -> dict:
    chosen = random.Random(i).sample(CATALOG, k=i % len(CATALOG))
    return {
        "description": f"body {i}",
        "permissions": sorted(chosen),
        "expires_at": f"2031-01-{i % 28 + 1:02d}T00:00:00Z",
    }


def _console_body(i: int) -> dict:
    body = _v1_body(i)
    return {
        "description": body["description"],
        "flatPermissionsList": body["permissions"],
        "expiresAt": body["expires_at"],
    }


def _at_once(live: Live, method: str, url: str, bodies: list[dict]) -> list[Answer]:
    """One request per body, all sent at once on their own connections."""

    async def send() -> list[Answer]:
        async with live.async_client(len(bodies)) as client:
            return await asyncio.gather(
                *(client.request(method, url, json=body, headers=live.auth) for body in bodies)
            )

    return run(send())


def _descriptions_audited(live: Live, key_id: int) -> list[dict]:
    """The description's from/to of each ``key.updated`` event of the key, oldest first."""
    with live.client() as client:
        events = client.get(
            "/v1/audit-events",
            params={"action": "key.updated", "key_id": key_id, "limit": 200},
            headers=live.auth,
        ).json()["items"][::-1]
    return [event["changes"]["description"] for event in events]


class TestConcurrentWrites:
    ROUNDS = 3

    def test_64_concurrent_v1_patches_of_one_key_leave_exactly_one_body(self, live):
        for _ in range(self.ROUNDS):
            key = live.create_key(description="start")
            bodies = [_v1_body(i) for i in range(64)]
            responses = _at_once(live, "PATCH", f"/v1/api-keys/{key['id']}", bodies)
            assert [r.status_code for r in responses] == [200] * 64, [
                r.text for r in responses if r.status_code != 200
            ][:3]
            final = live.get_key(key["id"])
            assert {f: final[f] for f in ("description", "permissions", "expires_at")} in bodies

    def test_64_concurrent_console_patches_of_one_key_leave_exactly_one_body(self, live):
        for _ in range(self.ROUNDS):
            key = live.create_key(description="start")
            bodies = [_console_body(i) for i in range(64)]
            responses = _at_once(live, "PATCH", f"/apikeys/{key['id']}", bodies)
            assert [r.status_code for r in responses] == [200] * 64, [
                r.text for r in responses if r.status_code != 200
            ][:3]
            assert {r.json()["success"] for r in responses} == {True}
            with live.client() as client:
                final = client.get(f"/apikeys/{key['id']}", headers=live.auth).json()
            shown = {f: final[f] for f in ("description", "flatPermissionsList", "expiresAt")}
            assert shown in bodies

    def test_64_patches_half_changing_nothing_audit_one_unbroken_chain(self, live):
        """A PATCH that changes nothing is answered from a plain read, beside writers:
        every write is still audited once, each from the value the one before left."""
        for _ in range(self.ROUNDS):
            key = live.create_key(description="start")
            url = f"/v1/api-keys/{key['id']}"
            # The odd ones ask for "start": a no-op, unless a writer got there first.
            bodies = [{"description": "start" if i % 2 else f"body {i}"} for i in range(64)]
            responses = _at_once(live, "PATCH", url, bodies)
            assert [r.status_code for r in responses] == [200] * 64, [
                r.text for r in responses if r.status_code != 200
            ][:3]
            assert {r.json()["description"] for r in responses} <= {
                b["description"] for b in bodies
            }
            chain = _descriptions_audited(live, key["id"])
            assert len(chain) >= 32  # every "body i" was written at least once
            assert chain[0]["from"] == "start"
            assert all(step["from"] != step["to"] for step in chain)
            assert all(a["to"] == b["from"] for a, b in itertools.pairwise(chain))
            assert chain[-1]["to"] == live.get_key(key["id"])["description"]

    def test_64_patches_plain_or_not_audit_one_unbroken_chain(self, live):
        """A PATCH of the description alone takes one statement (``PLAIN``); with
        ``meta`` or permissions it takes the path that decides in Python. Raced on one
        key, the two still serialize: every answer is its own body's, and the audit's
        descriptions chain from "start" to the stored one without a gap."""
        for _ in range(self.ROUNDS):
            key = live.create_key(description="start")
            url = f"/v1/api-keys/{key['id']}"
            bodies = [
                {"description": f"body {i}"}
                | ({"meta": {"i": i}} if i % 3 == 1 else {})
                | ({"permissions": _v1_body(i)["permissions"]} if i % 3 == 2 else {})
                for i in range(64)
            ]
            responses = _at_once(live, "PATCH", url, bodies)
            assert [r.status_code for r in responses] == [200] * 64, [
                r.text for r in responses if r.status_code != 200
            ][:3]
            assert [r.json()["description"] for r in responses] == [
                b["description"] for b in bodies
            ]
            chain = _descriptions_audited(live, key["id"])
            assert len(chain) == 64  # every body changed the description: one event each
            assert chain[0]["from"] == "start"
            assert all(a["to"] == b["from"] for a, b in itertools.pairwise(chain))
            assert sorted(step["to"] for step in chain) == sorted(b["description"] for b in bodies)
            assert chain[-1]["to"] == live.get_key(key["id"])["description"]

    def test_64_concurrent_creates_are_all_distinct(self, live):
        bodies = [{"description": f"c{i}"} for i in range(64)]
        responses = _at_once(live, "POST", "/v1/api-keys", bodies)
        assert [r.status_code for r in responses] == [201] * 64
        created = [r.json() for r in responses]
        for field in ("id", "key_prefix", "full_key"):
            assert len({c[field] for c in created}) == 64
        assert live.verify(created[0]["full_key"])["code"] == "VALID"


class TestConcurrentRotations:
    GRACE: ClassVar[dict[str, int]] = {"grace_period_seconds": 600}

    def test_pairs_of_rotations_hand_out_two_working_secrets_or_a_409(self, live):
        conflicts = 0
        for _ in range(40):
            key = live.create_key()
            pair = _at_once(live, "POST", f"/v1/api-keys/{key['id']}/rotate", [self.GRACE] * 2)
            statuses = sorted(r.status_code for r in pair)
            assert statuses in ([200, 200], [200, 409]), [r.text for r in pair]
            if statuses == [200, 409]:
                conflicts += 1
                continue
            verdicts = [live.verify(r.json()["full_key"]) for r in pair]
            assert [v["code"] for v in verdicts] == ["VALID", "VALID"]
            # The later rotation's secret is current, the earlier one in its grace.
            assert sorted(v["rotation"] is None for v in verdicts) == [False, True]
            assert live.verify(key["full_key"])["code"] == "NOT_FOUND"
        assert conflicts < 40

    def test_20_concurrent_rotations_end_as_some_serial_order(self, live):
        key = live.create_key()
        responses = _at_once(live, "POST", f"/v1/api-keys/{key['id']}/rotate", [self.GRACE] * 20)
        assert {r.status_code for r in responses} <= {200, 409}
        secrets = [r.json()["full_key"] for r in responses if r.status_code == 200]
        assert len(secrets) >= 2
        verdicts = [live.verify(s) for s in [*secrets, key["full_key"]]]
        current = [v for v in verdicts if v["code"] == "VALID" and v["rotation"] is None]
        in_grace = [v for v in verdicts if v["code"] == "VALID" and v["rotation"] is not None]
        assert len(current) == 1
        assert len(in_grace) == 1
        assert [v["code"] for v in verdicts].count("NOT_FOUND") == len(verdicts) - 2


def _revoking_under_load(
    live: Live, full_key: str, verifier: dict[str, str], revoke_id: int
) -> tuple[list[tuple[float, tuple[int, str | None]]], float]:
    """32 clients verify ``full_key`` with ``verifier`` while key ``revoke_id`` is
    revoked: each answer (status, code) with the moment its request started, and the
    moment the revocation was answered. No answer may be a 5xx or an error."""
    seen: list[tuple[float, tuple[int, str | None]]] = []
    tally = Tally()

    async def scenario() -> float:
        stop = asyncio.Event()
        async with live.async_client(40) as client:

            async def verifying() -> None:
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    started = time.monotonic()
                    response = await timed(
                        tally,
                        lambda: client.post(
                            "/v1/keys/verify", json={"key": full_key}, headers=verifier
                        ),
                    )
                    if response is not None:
                        code = response.json()["code"] if response.status_code == 200 else None
                        seen.append((started, (response.status_code, code)))

            tasks = [asyncio.create_task(verifying()) for _ in range(32)]
            await asyncio.sleep(1.0)
            revoked = await client.delete(f"/v1/api-keys/{revoke_id}", headers=live.auth)
            assert revoked.status_code == 200, revoked.text
            revoked_at = time.monotonic()
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            return revoked_at

    revoked_at = run(scenario())
    assert tally.server_errors == 0 and not tally.errors, str(tally)
    return seen, revoked_at


class TestRevocationUnderVerifyLoad:
    def test_no_verify_started_after_a_revoke_answers_valid(self, live):
        key = live.create_key()
        seen, revoked_at = _revoking_under_load(live, key["full_key"], live.verifier, key["id"])
        after = [answer for started, answer in seen if started > revoked_at]
        assert after and set(after) == {(200, "REVOKED")}
        assert (200, "VALID") in {answer for started, answer in seen if started < revoked_at}

    def test_no_verify_started_after_its_verifier_is_revoked_is_answered(self, live):
        """The verifier, not the key: refused (401) on its very next verify, any worker."""
        key = live.create_key()
        verifier = live.create_key(description="a verifier", permissions=[VERIFY])
        headers = {"Authorization": f"Bearer {verifier['full_key']}"}
        seen, revoked_at = _revoking_under_load(live, key["full_key"], headers, verifier["id"])
        after = [answer for started, answer in seen if started > revoked_at]
        assert after and set(after) == {(401, None)}
        assert (200, "VALID") in {answer for started, answer in seen if started < revoked_at}

    def test_100_revocations_under_full_verify_load_all_succeed(self, live):
        keys = [live.create_key(description=f"r{i}") for i in range(100)]
        hot = [live.create_key(description=f"hot{i}")["full_key"] for i in range(8)]
        verifies, revokes = Tally(), Tally()

        async def scenario() -> None:
            stop = asyncio.Event()
            async with live.async_client(48) as client:

                async def verifier(n: int) -> None:
                    deadline = time.monotonic() + 60
                    while not stop.is_set() and time.monotonic() < deadline:
                        await timed(
                            verifies,
                            lambda: client.post(
                                "/v1/keys/verify", json={"key": hot[n % 8]}, headers=live.verifier
                            ),
                        )

                async def revoker(batch: list[dict]) -> None:
                    for key in batch:
                        await timed(
                            revokes,
                            lambda key=key: client.delete(
                                f"/v1/api-keys/{key['id']}", headers=live.auth
                            ),
                        )

                tasks = [asyncio.create_task(verifier(n)) for n in range(32)]
                await asyncio.sleep(0.5)
                await asyncio.gather(*(revoker(keys[i::8]) for i in range(8)))
                stop.set()
                await asyncio.gather(*tasks)

        run(scenario())
        assert revokes.statuses == {200: 100}, str(revokes)
        assert verifies.server_errors == 0 and not verifies.errors, str(verifies)
        assert {live.verify(k["full_key"])["code"] for k in keys} == {"REVOKED"}


class TestLoginThrottle:
    def test_64_concurrent_wrong_passwords_check_at_most_the_limit(self, live):
        username, password = live.add_user()

        async def send() -> list[Answer]:
            form = {"grant_type": "password", "username": username, "password": "nope"}
            async with live.async_client(64) as client:
                return await asyncio.gather(
                    *(client.post("/v1/auth/token", data=form) for _ in range(64))
                )

        responses = run(send())
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {400, 429}, statuses
        assert statuses.count(400) <= LOGIN_LIMIT, statuses.count(400)
        assert all(int(r.headers["Retry-After"]) > 0 for r in responses if r.status_code == 429)
        right = live.login(username, password)
        assert right.status_code == 429
        assert int(right.headers["Retry-After"]) > 0


def _slow_body_client(live: Live, stop: float) -> None:
    """Sends a valid credential, then its body one byte at a time, until told to stop."""
    port = int(live.base.rsplit(":", 1)[1])
    body = b'{"description": "slow"}'
    head = (
        f"POST /v1/api-keys HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {live.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(head)
            for byte in body:
                if time.monotonic() > stop:
                    return
                slow.sendall(bytes([byte]))
                time.sleep(1.0)
    except OSError:
        return  # the server may hang up on a client this slow: that is its right


def _mixed_request(client: LoadClient, live: Live, rng: random.Random, keys, n: int):
    """Verify 60 %, list 15 %, PATCH 20 %, create 5 %: a busy API's day."""
    key, kind = rng.choice(keys), rng.random()
    if kind < 0.6:
        return lambda: client.post(
            "/v1/keys/verify", json={"key": key["full_key"]}, headers=live.verifier
        )
    if kind < 0.75:
        return lambda: client.get("/v1/api-keys", params={"limit": 5}, headers=live.auth)
    if kind < 0.95:
        return lambda: client.patch(
            f"/v1/api-keys/{key['id']}", json={"description": f"w{n}"}, headers=live.auth
        )
    return lambda: client.post("/v1/api-keys", json={"description": f"n{n}"}, headers=live.auth)


class TestMixedTrafficSoak:
    def test_256_connections_of_mixed_traffic_no_5xx_no_timeouts_healthz_fast(self, live):
        keys = [live.create_key(description=f"soak{i}") for i in range(32)]
        tally = Tally()

        async def scenario() -> Tally:
            deadline = time.monotonic() + SOAK_SECONDS
            loop = asyncio.get_running_loop()
            slow = [
                loop.run_in_executor(None, _slow_body_client, live, deadline) for _ in range(64)
            ]
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as elsewhere:
                health = loop.run_in_executor(elsewhere, probe, live.base, "/healthz", SOAK_SECONDS)
                async with live.async_client(256, timeout=30) as client:

                    async def worker(n: int) -> None:
                        rng = random.Random(n)
                        while time.monotonic() < deadline:
                            await timed(tally, _mixed_request(client, live, rng, keys, n))

                    await asyncio.gather(*(worker(n) for n in range(256)))
                probed = await health
            await asyncio.gather(*slow)
            return probed

        health = run(scenario())
        assert tally.server_errors == 0 and not tally.errors, str(tally)
        assert sum(tally.statuses.values()) > 1000, str(tally)
        assert set(tally.statuses) <= {200, 201}, str(tally)
        assert health.statuses.keys() == {200} and not health.errors, str(health)
        assert health.slowest < 1.0, str(health)


class TestUsageCounts:
    def test_every_verify_of_64_clients_on_2_workers_is_counted_once(self, fresh_database_url):
        """By code and by tag, exactly, once the workers' flush interval has passed."""
        with live_server(fresh_database_url) as live:
            held = live.create_key(permissions=[CATALOG[0]])
            tags = ["endpoint=/a", "endpoint=/b", "region=eu"]
            kinds = [  # (body, code)
                ({"key": held["full_key"]}, "VALID"),
                (
                    {"key": held["full_key"], "permissions": [CATALOG[1]]},
                    "INSUFFICIENT_PERMISSIONS",
                ),
                ({"key": "kp_" + "x" * 36}, "NOT_FOUND"),
            ]
            sent = 960
            bodies = [kinds[i % 3][0] | {"tags": [tags[i % 4 % 3]]} for i in range(sent)]

            async def send() -> list[Answer]:
                async with live.async_client(64) as client:  # 64 connections, all busy
                    return await asyncio.gather(
                        *(
                            client.post("/v1/keys/verify", json=body, headers=live.verifier)
                            for body in bodies
                        )
                    )

            answers = run(send())
            assert [a.status_code for a in answers] == [200] * sent
            expected_codes = {code: sent // 3 for _, code in kinds}
            expected_tags: dict[str, int] = {}
            for i in range(sent):
                expected_tags[tags[i % 4 % 3]] = expected_tags.get(tags[i % 4 % 3], 0) + 1
            deadline = time.monotonic() + 20  # the flush interval is 5 s
            while True:
                with live.client() as client:
                    by_code = client.get("/v1/usage", headers=live.auth).json()["items"]
                    by_tag = client.get(
                        "/v1/usage", params={"group_by": "tag"}, headers=live.auth
                    ).json()["items"]
                codes = {i["code"]: i["count"] for i in by_code}
                if codes == expected_codes or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert codes == expected_codes
            assert {i["tag"]: i["count"] for i in by_tag} == expected_tags
