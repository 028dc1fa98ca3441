"""Usage limits under real concurrency: exact, across workers and instances.

Three set-ups, each of 2-worker servers: SQLite, PostgreSQL, and PostgreSQL with
Redis (``KEYPLANE_REDIS_URL``) behind **two separate Keyplane instances** sharing
both. Requests are spread over every instance; not one ``VALID`` may pass a limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import REDIS_URLS, empty_redis, new_database
from tests.live import Answer, Live, LoadClient, live_env, live_server, run
from tests.servers import serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

CLIENTS = 64
PER_MINUTE = {"name": "per-minute", "limit": 50, "duration_ms": 60000, "auto_apply": True}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The Redis set-up (two instances) runs in the PostgreSQL half: two instances
    need a database they can share."""
    if "instances" in metafunc.fixturenames:
        setups = ["database"]
        if metafunc.config.getoption("--db") == "postgresql":
            setups.append("redis")
        metafunc.parametrize("instances", setups, indirect=True, scope="module")


@pytest.fixture(scope="module")
def instances(request, db_kind, tmp_path_factory) -> Iterator[list[Live]]:
    """One server (windows in the database), or two sharing PostgreSQL and Redis; each
    set-up on a database of its own."""
    with ExitStack() as stack:
        url = stack.enter_context(new_database(db_kind, tmp_path_factory.mktemp("limits")))
        if request.param == "database":
            yield [stack.enter_context(live_server(url))]
            return
        redis_url = empty_redis(REDIS_URLS[db_kind])
        first = stack.enter_context(live_server(url, KEYPLANE_REDIS_URL=redis_url))
        env = live_env(url, KEYPLANE_REDIS_URL=redis_url)
        base, server = stack.enter_context(serving(env, workers=2))
        wait_until_up(base, timeout=60)
        second = Live(
            base,
            server,
            env,
            token=first.token,
            account_id=first.account_id,
            verifier_key=first.verifier_key,
        )
        yield [first, second]


def _spread(instances: list[Live], requests: list[tuple[str, str, dict[str, Any]]]) -> list[Answer]:
    """Every request at once, the i-th to instance i mod n, on ``CLIENTS`` connections
    in all."""

    async def send() -> list[Answer]:
        per = max(1, CLIENTS // len(instances))
        clients = [LoadClient(live.base, per, timeout=60) for live in instances]
        try:
            return await asyncio.gather(
                *(
                    clients[i % len(clients)].request(method, path, **kwargs)
                    for i, (method, path, kwargs) in enumerate(requests)
                )
            )
        finally:
            for client in clients:
                await client.__aexit__()

    return run(send())


def _verifies(
    instances: list[Live], full_keys: list[str], n: int, **extra: Any
) -> list[tuple[str, str, dict]]:
    body = {"headers": instances[0].verifier}
    return [
        (
            "POST",
            "/v1/keys/verify",
            body | {"json": {"key": full_keys[i % len(full_keys)], **extra}},
        )
        for i in range(n)
    ]


def _codes(answers: list[Answer]) -> Counter[str]:
    assert [a.status_code for a in answers] == [200] * len(answers), [
        a.text for a in answers if a.status_code != 200
    ][:3]
    return Counter(a.json()["code"] for a in answers)


def _get(instances: list[Live], path: str) -> list[dict[str, Any]]:
    """``path`` as each instance shows it."""
    shown = []
    for live in instances:
        with live.client() as client:
            response = client.get(path, headers=live.auth)
        assert response.status_code == 200, response.text
        shown.append(response.json())
    return shown


def _inside_a_fresh_minute() -> None:
    """Start a burst early in a minute's window, so that it cannot straddle two."""
    into = time.time() % 60
    if into > 40:
        time.sleep(60 - into + 0.2)


def _sleep_until(moment: str) -> None:
    time.sleep(max(0.0, datetime.fromisoformat(moment).timestamp() - time.time()) + 0.2)


class TestCredits:
    def test_300_verifies_of_a_key_with_100_credits_are_exactly_100_valid(self, instances):
        key = instances[0].create_key(credits={"remaining": 100})
        codes = _codes(_spread(instances, _verifies(instances, [key["full_key"]], 300)))
        assert codes == {"VALID": 100, "USAGE_EXCEEDED": 200}
        for shown in _get(instances, f"/v1/api-keys/{key['id']}"):
            assert shown["credits"] == {"remaining": 0, "refill": None}

    def test_two_keys_of_one_identity_share_its_100_credits_exactly(self, instances):
        live = instances[0]
        with live.client() as client:
            made = client.put(
                "/v1/identities/cus_shared",
                json={"credits": {"remaining": 100}},
                headers=live.auth,
            )
        assert made.status_code == 201, made.text
        keys = [live.create_key(external_id="cus_shared")["full_key"] for _ in range(2)]
        answers = _spread(instances, _verifies(instances, keys, 300))
        assert _codes(answers) == {"VALID": 100, "USAGE_EXCEEDED": 200}
        spent = sorted(
            a.json()["credits_remaining"]["identity"] for a in answers if a.json()["valid"]
        )
        assert spent == list(range(100))  # each credit spent once: no two saw one balance
        for shown in _get(instances, "/v1/identities/cus_shared"):
            assert shown["credits"]["remaining"] == 0

    def test_64_increments_racing_verifies_lose_none(self, instances):
        key = instances[0].create_key(credits={"remaining": 50})
        change = {"json": {"op": "increment", "value": 1}, "headers": instances[0].auth}
        requests = [("POST", f"/v1/api-keys/{key['id']}/credits", change)] * CLIENTS
        requests += _verifies(instances, [key["full_key"]], 50)
        answers = _spread(instances, requests)
        assert [a.status_code for a in answers[:CLIENTS]] == [200] * CLIENTS
        assert _codes(answers[CLIENTS:]) == {"VALID": 50}  # 50 + 64 credits for 50 verifies
        for shown in _get(instances, f"/v1/api-keys/{key['id']}"):
            assert shown["credits"]["remaining"] == 64


class TestRateLimits:
    def test_200_verifies_at_once_against_50_a_minute_are_exactly_50_valid(self, instances):
        key = instances[0].create_key(ratelimits=[PER_MINUTE])
        _inside_a_fresh_minute()
        answers = _spread(instances, _verifies(instances, [key["full_key"]], 200))
        assert _codes(answers) == {"VALID": 50, "RATE_LIMITED": 150}
        valid = [a.json()["ratelimits"][0] for a in answers if a.json()["valid"]]
        assert sorted(r["remaining"] for r in valid) == list(range(50))  # one use each
        (reset_at,) = {r["reset_at"] for r in valid}
        _sleep_until(reset_at)
        again = instances[-1].verify(key["full_key"])
        assert again["code"] == "VALID"
        assert again["ratelimits"][0]["remaining"] == 49

    def test_verifies_naming_an_exceeded_limit_spend_no_credit(self, instances):
        exports = {"name": "exports", "limit": 10, "duration_ms": 3600000}
        key = instances[0].create_key(ratelimits=[exports], credits={"remaining": 100})
        named = _verifies(instances, [key["full_key"]], CLIENTS, ratelimits=[{"name": "exports"}])
        assert _codes(_spread(instances, named)) == {"VALID": 10, "RATE_LIMITED": CLIENTS - 10}
        for shown in _get(instances, f"/v1/api-keys/{key['id']}"):
            assert shown["credits"]["remaining"] == 90

    def test_200_standalone_uses_at_once_against_50_are_exactly_50(self, instances):
        live = instances[0]
        body = {"namespace": "signups", "identifier": "203.0.113.9", "limit": 50}
        body["duration_ms"] = 3600000
        answers = _spread(
            instances, [("POST", "/v1/ratelimit", {"json": body, "headers": live.auth})] * 200
        )
        assert [a.status_code for a in answers] == [200] * 200
        assert Counter(a.json()["success"] for a in answers) == {True: 50, False: 150}


class TestConcurrentManagement:
    def test_64_puts_of_one_new_identity_create_it_once(self, instances):
        live = instances[0]
        bodies = [{"meta": {"n": i}, "credits": {"remaining": i}} for i in range(CLIENTS)]
        answers = _spread(
            instances,
            [
                ("PUT", "/v1/identities/cus_raced", {"json": b, "headers": live.auth})
                for b in bodies
            ],
        )
        assert sorted(a.status_code for a in answers) == [200] * (CLIENTS - 1) + [201]
        final = _get(instances, "/v1/identities/cus_raced")[0]
        assert final["meta"] == {"n": final["credits"]["remaining"]}  # one body, not a mix

    def test_64_puts_of_one_override_leave_one_audited_each(self, instances):
        live = instances[0]
        path = "/v1/ratelimit/signups/overrides/198.51.100.4"
        bodies = [{"limit": i + 1, "duration_ms": 60000} for i in range(CLIENTS)]
        answers = _spread(
            instances, [("PUT", path, {"json": b, "headers": live.auth}) for b in bodies]
        )
        assert sorted(a.status_code for a in answers) == [200] * (CLIENTS - 1) + [201]
        mine = _audited(live, "ratelimit.override_set", "signups/198.51.100.4")
        assert len(mine) == CLIENTS
        # The override standing is the last one audited.
        check = {"namespace": "signups", "identifier": "198.51.100.4", "limit": 10**6}
        check["duration_ms"] = 60000
        used = _send(live, "POST", "/v1/ratelimit", json=check).json()
        assert used["limit"] == mine[0]["changes"]["limit"]

    def test_64_patches_of_one_identity_leave_one_body_and_64_audited(self, instances):
        live = instances[0]
        made = _send(live, "PUT", "/v1/identities/cus_patched", json={"meta": {"n": -1}})
        assert made.status_code == 201, made.text
        bodies = [{"meta": {"n": i}, "credits": {"remaining": i}} for i in range(CLIENTS)]
        answers = _spread(
            instances,
            [
                ("PATCH", "/v1/identities/cus_patched", {"json": b, "headers": live.auth})
                for b in bodies
            ],
        )
        assert [a.status_code for a in answers] == [200] * CLIENTS
        assert [a.json()["meta"]["n"] for a in answers] == list(range(CLIENTS))
        updated = _audited(live, "identity.updated", "cus_patched")
        assert len(updated) == CLIENTS
        for shown in _get(instances, "/v1/identities/cus_patched"):
            assert shown["meta"] == {"n": shown["credits"]["remaining"]}  # one body, not a mix
            # The body standing is the last one audited.
            assert shown["credits"] == updated[0]["changes"]["credits"]

    def test_64_deletes_of_one_identity_racing_its_verifies_delete_it_once(self, instances):
        live = instances[0]
        made = _send(live, "PUT", "/v1/identities/cus_leaving", json={"credits": {"remaining": 10}})
        assert made.status_code == 201, made.text
        key = live.create_key(external_id="cus_leaving")
        deletes = [("DELETE", "/v1/identities/cus_leaving", {"headers": live.auth})] * CLIENTS
        answers = _spread(instances, deletes + _verifies(instances, [key["full_key"]], CLIENTS))
        assert sorted(a.status_code for a in answers[:CLIENTS]) == [204] + [404] * (CLIENTS - 1)
        codes = _codes(answers[CLIENTS:])
        # Up to 10 spend the identity's credits; once it is gone the key is unlimited.
        assert set(codes) <= {"VALID", "USAGE_EXCEEDED"} and codes["VALID"] >= 10
        assert len(_audited(live, "identity.deleted", "cus_leaving")) == 1
        for each in instances:
            assert _send(each, "GET", "/v1/identities/cus_leaving").status_code == 404
            assert each.verify(key["full_key"])["code"] == "VALID"

    def test_64_deletes_of_one_override_remove_it_once(self, instances):
        live = instances[0]
        path = "/v1/ratelimit/signups/overrides/192.0.2.77"
        made = _send(live, "PUT", path, json={"limit": 1, "duration_ms": 60000})
        assert made.status_code == 201, made.text
        answers = _spread(instances, [("DELETE", path, {"headers": live.auth})] * CLIENTS)
        assert sorted(a.status_code for a in answers) == [204] + [404] * (CLIENTS - 1)
        assert len(_audited(live, "ratelimit.override_deleted", "signups/192.0.2.77")) == 1
        check = {"namespace": "signups", "identifier": "192.0.2.77", "limit": 5}
        check["duration_ms"] = 60000
        used = _send(instances[-1], "POST", "/v1/ratelimit", json=check).json()
        assert used["limit"] == 5  # the request's own limit counts again

    def test_64_decrements_of_50_credits_take_each_once_and_refuse_the_rest(self, instances):
        live = instances[0]
        key = live.create_key(credits={"remaining": 50})
        change = {"json": {"op": "decrement", "value": 1}, "headers": live.auth}
        answers = _spread(
            instances, [("POST", f"/v1/api-keys/{key['id']}/credits", change)] * CLIENTS
        )
        assert sorted(a.status_code for a in answers) == [200] * 50 + [409] * (CLIENTS - 50)
        left = sorted(a.json()["credits"]["remaining"] for a in answers if a.status_code == 200)
        assert left == list(range(50))  # no two decrements saw one balance
        for shown in _get(instances, f"/v1/api-keys/{key['id']}"):
            assert shown["credits"]["remaining"] == 0
        assert len(_audited(live, "key.credits_changed", str(key["id"]))) == 50

    def test_64_sets_of_one_keys_credits_leave_the_last_audited(self, instances):
        live = instances[0]
        key = live.create_key(credits={"remaining": 1})
        answers = _spread(
            instances,
            [
                (
                    "POST",
                    f"/v1/api-keys/{key['id']}/credits",
                    {"json": {"op": "set", "value": 1000 + i}, "headers": live.auth},
                )
                for i in range(CLIENTS)
            ],
        )
        assert [a.json()["credits"]["remaining"] for a in answers] == [
            1000 + i for i in range(CLIENTS)
        ]
        audited = _audited(live, "key.credits_changed", str(key["id"]))
        assert len(audited) == CLIENTS
        for shown in _get(instances, f"/v1/api-keys/{key['id']}"):
            assert shown["credits"]["remaining"] == audited[0]["changes"]["remaining"]


def _send(live: Live, method: str, path: str, **kwargs: Any) -> Any:
    with live.client() as client:
        return client.request(method, path, headers=live.auth, **kwargs)


def _audited(live: Live, action: str, target_id: str) -> list[dict[str, Any]]:
    """The audit events of ``action`` on ``target_id``, newest first."""
    events = _send(live, "GET", "/v1/audit-events", params={"action": action, "limit": 200})
    assert events.status_code == 200, events.text
    return [e for e in events.json()["items"] if str(e["target"]["id"]) == target_id]
