"""Webhooks and leak reports on a live server with 2 workers, its own senders sending
to real receivers on loopback: events under concurrent writes, an endpoint that never
answers, a server killed mid-delivery, two instances sharing one PostgreSQL database,
and one signed leak report sent many times at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from keyplane.webhooks import LAST_TRY_AND_CLOCKS, SETTLE_SECONDS
from tests.github import GitHub, found
from tests.live import Live, Tally, live_server, run, timed
from tests.receivers import Receiver, receiving

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

SEND_TIMEOUT = 2  # KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS
# How long a sender holds a delivery it claimed (``keyplane.webhooks.Sender.lease``).
LEASE_SECONDS = SEND_TIMEOUT + SETTLE_SECONDS + LAST_TRY_AND_CLOCKS.total_seconds()
SENDING = {"KEYPLANE_WEBHOOKS_ALLOW_PRIVATE": "true", "KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS": "2"}


def _register(live: Live, url: str, **fields) -> dict:
    with live.client() as client:
        made = client.post("/v1/webhooks", json={"url": url, **fields}, headers=live.auth)
    assert made.status_code == 201, made.text
    return made.json()


def _deliveries(live: Live, hook_id: int) -> list[dict]:
    items: list[dict] = []
    cursor = None
    with live.client() as client:
        while True:
            params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
            page = client.get(
                f"/v1/webhooks/{hook_id}/deliveries", params=params, headers=live.auth
            ).json()
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items


def _by_key(receiver: Receiver, secret: str) -> dict[int, list[dict]]:
    held: dict[int, list[dict]] = defaultdict(list)
    for body in receiver.bodies(secret):
        held[body["data"]["object"]["id"]].append(body)
    return held


def _about(receiver: Receiver, secret: str, key_id: int) -> list:
    """The messages about one key, in the order they came."""
    return [
        m for m in list(receiver.received) if m.verified(secret)["data"]["object"]["id"] == key_id
    ]


def _kill(server: subprocess.Popen[str]) -> None:
    """SIGKILL for the server and its workers: nothing of theirs runs on."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    server.send_signal(signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    server.wait(timeout=10)


def test_concurrent_patches_each_commit_is_one_event_in_commit_order(module_database_url):
    keys, writes_per_key = 8, 8
    with receiving() as receiver, live_server(module_database_url, **SENDING) as live:
        hook = _register(live, receiver.url, event_types=["key.updated"])
        made = [live.create_key(description="start") for _ in range(keys)]

        async def patch_all() -> list:
            async with live.async_client(keys * writes_per_key) as client:
                return await asyncio.gather(
                    *(
                        client.patch(
                            f"/v1/api-keys/{key['id']}",
                            json={"description": f"{key['id']}-{n}"},
                            headers=live.auth,
                        )
                        for n in range(writes_per_key)
                        for key in made
                    )
                )

        answers = run(patch_all())
        assert Counter(a.status_code for a in answers) == {200: keys * writes_per_key}
        receiver.wait_for(keys * writes_per_key, seconds=60)
        time.sleep(1.5)  # a duplicate would come within a sender's round
        assert len(receiver.received) == keys * writes_per_key
        assert len({m.id for m in receiver.received}) == keys * writes_per_key
        for key_id, events in _by_key(receiver, hook["secret"]).items():
            # Each event's "before" is the one before it's "after": the commit order.
            descriptions = ["start"] + [e["data"]["object"]["description"] for e in events]
            previous = [e["data"]["previous_attributes"]["description"] for e in events]
            assert previous == descriptions[:-1]
            assert descriptions[-1] == live.get_key(key_id)["description"]


def test_an_endpoint_that_never_answers_does_not_slow_patch(module_database_url):
    """PATCH throughput and latency with every event going to an endpoint that holds
    each request until it times out, against the same with the endpoint switched off."""
    requests, connections = 300, 32
    with receiving(then=0) as receiver, live_server(module_database_url, **SENDING) as live:
        hook = _register(live, receiver.url)
        key = live.create_key(description="start")

        def load(label: str) -> tuple[Tally, float]:
            tally = Tally()

            async def send() -> None:
                async with live.async_client(connections) as client:
                    await asyncio.gather(
                        *(
                            timed(
                                tally,
                                lambda n=n: client.patch(
                                    f"/v1/api-keys/{key['id']}",
                                    json={"description": f"{label} {n}"},
                                    headers=live.auth,
                                ),
                            )
                            for n in range(requests)
                        )
                    )

            started = time.monotonic()
            run(send())
            return tally, requests / (time.monotonic() - started)

        load("warm")
        with live.client() as client:
            client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=live.auth)
        quiet, quiet_rate = load("quiet")
        with live.client() as client:
            client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=live.auth)
        hung, hung_rate = load("hung")
        receiver.wait_for(1)  # the senders are holding requests open meanwhile
        print(f"PATCH req/s: endpoint off {quiet_rate:.0f}, endpoint hanging {hung_rate:.0f}")
        print(f"  off: {quiet}\n  hanging: {hung}")
        assert set(hung.statuses) == {200} and set(quiet.statuses) == {200}
        assert not hung.errors and not quiet.errors
        # Had requests waited on sends (each held SEND_TIMEOUT s), the rate would be at
        # most connections / SEND_TIMEOUT = 16 req/s, a fraction of the quiet rate.
        assert hung_rate >= 0.5 * quiet_rate
        pending = [d for d in _deliveries(live, hook["id"]) if d["state"] == "pending"]
        assert pending and all(a["status_code"] is None for d in pending for a in d["attempts"])


def test_a_server_killed_mid_delivery_delivers_after_restart_with_the_same_id(
    fresh_database_url,
):
    with receiving(0) as receiver:  # the first request is held: the server dies during it
        with live_server(fresh_database_url, **SENDING) as live:
            hook = _register(live, receiver.url, event_types=["key.created"])
            key = live.create_key(description="sent while the server dies")
            (held,) = receiver.wait_for(1)
            _kill(live.server)
        with live_server(fresh_database_url, **SENDING) as restarted:
            # (Its start made a verifier key: that key's own key.created comes too.)
            deadline = time.monotonic() + LEASE_SECONDS + 20
            while len(_about(receiver, hook["secret"], key["id"])) < 2:
                assert time.monotonic() < deadline, "not delivered again after the restart"
                time.sleep(0.1)
            time.sleep(1.5)
            first, second = _about(receiver, hook["secret"], key["id"])
            assert first.id == second.id == held.id and first.body == second.body
            (delivery,) = [
                d for d in _deliveries(restarted, hook["id"]) if d["event_id"] == held.id
            ]
            assert delivery["state"] == "delivered"
            assert [a["status_code"] for a in delivery["attempts"]] == [204]


def test_two_instances_never_deliver_one_attempt_twice(db_kind, module_database_url):
    if db_kind != "postgresql":
        pytest.skip("two instances share a PostgreSQL database (SQLite: one host, one file)")
    events = 200
    # A send's time long enough that a loaded machine's slow answer is not a failed
    # attempt (that one would rightly be sent again): what is tested is the sharing.
    patient = SENDING | {"KEYPLANE_WEBHOOKS_TIMEOUT_SECONDS": "10"}
    with (
        receiving() as receiver,
        live_server(module_database_url, **patient) as one,
        live_server(module_database_url, **patient) as other,
    ):
        hook = _register(one, receiver.url, event_types=["key.created"])

        async def create_all() -> list:
            async with one.async_client(32) as a, other.async_client(32) as b:
                return await asyncio.gather(
                    *(
                        (a if n % 2 else b).post(
                            "/v1/api-keys", json={"description": f"k{n}"}, headers=one.auth
                        )
                        for n in range(events)
                    )
                )

        answers = run(create_all())
        assert Counter(a.status_code for a in answers) == {201: events}
        receiver.wait_for(events, seconds=60)
        time.sleep(2)
        ids = Counter(m.id for m in receiver.received)
        assert len(ids) == events and set(ids.values()) == {1}
        deliveries = _deliveries(one, hook["id"])
        assert len(deliveries) == events
        assert {(d["state"], len(d["attempts"])) for d in deliveries} == {("delivered", 1)}


def test_one_signed_leak_report_sent_at_once_acts_once(module_database_url, tmp_path):
    github = GitHub()
    keys_file = github.publish(tmp_path)
    with live_server(module_database_url, KEYPLANE_GITHUB_LEAK_KEYS=str(keys_file)) as live:
        key = live.create_key(description="leaked")
        body, headers = github.signed(found(key["full_key"]))

        async def report_all() -> list:
            async with live.async_client(32) as client:
                return await asyncio.gather(
                    *(
                        client.post("/v1/leaks/github", data=body, headers=headers)
                        for _ in range(32)
                    )
                )

        answers = run(report_all())
        assert Counter(a.status_code for a in answers) == {200: 1, 409: 31}
        assert live.get_key(key["id"])["status"] == "revoked"
        with live.client() as client:
            leaks = client.get(
                "/v1/audit-events", params={"action": "key.leaked"}, headers=live.auth
            ).json()["items"]
        assert len(leaks) == 1


def test_concurrent_webhook_changes_leave_one_requests_result(module_database_url):
    with live_server(module_database_url, **SENDING) as live:
        hook = _register(live, "http://127.0.0.1:9/hook")
        path = f"/v1/webhooks/{hook['id']}"

        async def change_all() -> list:
            async with live.async_client(48) as client:
                patches = [
                    client.patch(path, json={"description": f"d{n}"}, headers=live.auth)
                    for n in range(32)
                ]
                rotations = [
                    client.post(f"{path}/rotate-secret", json={}, headers=live.auth)
                    for _ in range(16)
                ]
                return await asyncio.gather(*patches, *rotations)

        answers = run(change_all())
        assert Counter(a.status_code for a in answers) == {200: 48}
        with live.client() as client:
            shown = client.get(path, headers=live.auth).json()
            audited = client.get(
                "/v1/audit-events", params={"limit": 100}, headers=live.auth
            ).json()["items"]
        assert shown["description"] in {f"d{n}" for n in range(32)}
        actions = Counter(e["action"] for e in audited if e["target"]["id"] == str(hook["id"]))
        assert actions["webhook.secret_rotated"] == 16
        assert 1 <= actions["webhook.updated"] <= 32
