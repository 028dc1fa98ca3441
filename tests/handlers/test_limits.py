"""Usage limits at verify: credits (with refills, on a clock the test moves), rate limits,
and an identity's shared ones (the credits operation: ``test_api_keys.TestCredits``)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import pytest

from keyplane.app import create_app
from keyplane.db.limits import Refill
from keyplane.db.models import RefillInterval
from tests.servers import free_port


def _key(client, factory, admin, **body):
    made = client.post("/v1/api-keys", json=body, headers=factory.auth(admin))
    assert made.status_code == 201, made.text
    return made.json()


def _verify(client, verifier, key, **extra):
    body = {"key": key["full_key"], **extra}
    answer = client.post("/v1/keys/verify", json=body, headers=verifier)
    assert answer.status_code == 200
    return answer.json()


class TestRefillMoments:
    @pytest.mark.parametrize(
        ("interval", "day", "now", "moment"),
        [
            ("daily", None, "2027-03-05T13:00:00Z", "2027-03-05T00:00:00Z"),
            ("monthly", None, "2027-03-05T13:00:00Z", "2027-03-01T00:00:00Z"),
            ("monthly", 15, "2027-03-05T13:00:00Z", "2027-02-15T00:00:00Z"),
            # A day past a short month's end is its last day.
            ("monthly", 31, "2027-03-05T13:00:00Z", "2027-02-28T00:00:00Z"),
            ("monthly", 30, "2028-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("monthly", 31, "2027-01-31T00:00:00Z", "2027-01-31T00:00:00Z"),
            ("monthly", 5, "2027-01-02T00:00:00Z", "2026-12-05T00:00:00Z"),
        ],
    )
    def test_the_last_refill_moment(self, interval, day, now, moment):
        refill = Refill(RefillInterval(interval), 10, day)
        at = datetime.fromisoformat(now.replace("Z", "+00:00"))
        assert refill.last_moment(at) == datetime.fromisoformat(moment.replace("Z", "+00:00"))


class TestCredits:
    def test_each_valid_verify_spends_its_cost_and_then_usage_exceeded(
        self, client, factory, admin, clock, verifier
    ):
        key = _key(client, factory, admin, credits={"remaining": 3})
        assert _verify(client, verifier, key, cost=2)["credits_remaining"] == {
            "key": 1,
            "identity": None,
        }
        assert _verify(client, verifier, key, cost=0)["code"] == "VALID"  # checks, spends none
        refused = _verify(client, verifier, key, cost=2)
        assert (refused["valid"], refused["code"], refused["key_id"]) == (
            False,
            "USAGE_EXCEEDED",
            None,
        )
        assert refused["credits_remaining"] == {"key": 1, "identity": None}
        assert _verify(client, verifier, key)["credits_remaining"]["key"] == 0
        assert _verify(client, verifier, key, cost=0)["code"] == "USAGE_EXCEEDED"
        shown = client.get(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin)).json()
        assert shown["credits"] == {"remaining": 0, "refill": None}

    def test_a_refill_comes_on_time_once_without_a_scheduler(
        self, client, factory, admin, clock, verifier
    ):
        plan = {"remaining": 2, "refill": {"interval": "daily", "amount": 5}}
        key = _key(client, factory, admin, credits=plan)
        _verify(client, verifier, key)
        _verify(client, verifier, key)
        assert _verify(client, verifier, key)["code"] == "USAGE_EXCEEDED"
        clock.move(hours=11, minutes=59)  # 23:59 UTC: not yet
        assert _verify(client, verifier, key)["code"] == "USAGE_EXCEEDED"
        clock.move(minutes=1)  # midnight UTC: refilled to 5, once
        assert _verify(client, verifier, key)["credits_remaining"]["key"] == 4
        assert _verify(client, verifier, key)["credits_remaining"]["key"] == 3
        clock.move(hours=23)
        assert (
            _verify(client, verifier, key)["credits_remaining"]["key"] == 2
        )  # same day: no refill
        clock.move(days=3)  # several days later: one refill, to the amount
        assert _verify(client, verifier, key)["credits_remaining"]["key"] == 4

    def test_a_credit_change_applies_a_due_refill_once(
        self, client, factory, admin, clock, verifier
    ):
        plan = {"remaining": 5, "refill": {"interval": "daily", "amount": 5}}
        key = _key(client, factory, admin, credits=plan)
        clock.move(hours=12)  # midnight UTC: a refill to 5 is due, and 5 are left already
        change = client.post(
            f"/v1/api-keys/{key['id']}/credits",
            json={"op": "decrement", "value": 1},
            headers=factory.auth(admin),
        )
        assert change.json()["credits"]["remaining"] == 4
        # The refill was applied with the change: it does not come a second time today.
        assert _verify(client, verifier, key)["credits_remaining"]["key"] == 3

    def test_an_identitys_credits_are_shared_by_its_keys(
        self, client, factory, admin, clock, verifier
    ):
        client.put(
            "/v1/identities/cus_7",
            json={"meta": {"plan": "trial"}, "credits": {"remaining": 3}},
            headers=factory.auth(admin),
        )
        first = _key(client, factory, admin, external_id="cus_7")
        second = _key(client, factory, admin, external_id="cus_7", credits={"remaining": 10})
        answer = _verify(client, verifier, first)
        assert answer["identity"] == {"external_id": "cus_7", "meta": {"plan": "trial"}}
        assert answer["credits_remaining"] == {"key": None, "identity": 2}
        assert _verify(client, verifier, second)["credits_remaining"] == {"key": 9, "identity": 1}
        assert _verify(client, verifier, first)["credits_remaining"]["identity"] == 0
        refused = _verify(client, verifier, second)
        assert refused["code"] == "USAGE_EXCEEDED"
        # The key could pay, its identity could not: neither paid.
        shown = client.get(f"/v1/api-keys/{second['id']}", headers=factory.auth(admin)).json()
        assert shown["credits"]["remaining"] == 9

    def test_a_member_cannot_give_their_own_key_credits(self, client, factory, member):
        refused = client.post(
            "/v1/api-keys", json={"credits": {"remaining": 10**9}}, headers=factory.auth(member)
        )
        assert refused.status_code == 403
        made = client.post("/v1/api-keys", json={}, headers=factory.auth(member)).json()
        patched = client.patch(
            f"/v1/api-keys/{made['id']}",
            json={"ratelimits": []},
            headers=factory.auth(member),
        )
        assert patched.status_code == 200  # what they already have: nothing changes
        patched = client.patch(
            f"/v1/api-keys/{made['id']}",
            json={"credits": {"remaining": 5}},
            headers=factory.auth(member),
        )
        assert patched.status_code == 403


class TestRateLimits:
    def test_an_auto_applied_limit_holds_its_window_then_resets(
        self, counting, factory, admin, clock, verifier
    ):
        limits = [{"name": "per-minute", "limit": 2, "duration_ms": 60000, "auto_apply": True}]
        key = _key(counting, factory, admin, ratelimits=limits)
        first = _verify(counting, verifier, key)
        assert first["ratelimits"] == [
            {
                "name": "per-minute",
                "limit": 2,
                "remaining": 1,
                "reset_at": "2027-01-30T12:01:00Z",
                "exceeded": False,
            }
        ]
        _verify(counting, verifier, key)
        limited = _verify(counting, verifier, key)
        assert (limited["code"], limited["ratelimits"][0]["exceeded"]) == ("RATE_LIMITED", True)
        clock.move(seconds=60)
        assert _verify(counting, verifier, key)["ratelimits"][0]["remaining"] == 1

    def test_a_named_limit_is_checked_with_its_cost_and_a_refusal_spends_no_credit(
        self, counting, factory, admin, clock, verifier
    ):
        limits = [{"name": "exports", "limit": 5, "duration_ms": 3600000}]
        key = _key(counting, factory, admin, ratelimits=limits, credits={"remaining": 100})
        assert _verify(counting, verifier, key)["ratelimits"] == []  # not auto-applied, not named
        named = _verify(counting, verifier, key, ratelimits=[{"name": "exports", "cost": 4}])
        assert named["ratelimits"][0]["remaining"] == 1
        assert named["credits_remaining"]["key"] == 98
        refused = _verify(counting, verifier, key, ratelimits=[{"name": "exports", "cost": 2}])
        assert refused["code"] == "RATE_LIMITED"
        shown = counting.get(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin)).json()
        assert shown["credits"]["remaining"] == 98  # the refused verify spent nothing

    def test_one_exceeded_limit_counts_nothing_in_the_others(
        self, counting, factory, acme, admin, clock, verifier
    ):
        per_customer = {"name": "customer", "limit": 1, "duration_ms": 60000, "auto_apply": True}
        factory.identity(acme, "cus_9", ratelimits=[per_customer])
        per_key = {"name": "key", "limit": 10, "duration_ms": 60000, "auto_apply": True}
        key = _key(counting, factory, admin, external_id="cus_9", ratelimits=[per_key])
        assert _verify(counting, verifier, key)["code"] == "VALID"
        for _ in range(3):
            refused = _verify(counting, verifier, key)
            assert refused["code"] == "RATE_LIMITED"
            assert {(r["name"], r["remaining"], r["exceeded"]) for r in refused["ratelimits"]} == {
                ("key", 9, False),  # the refused verifies took nothing from the key's window
                ("customer", 0, True),
            }

    def test_a_key_without_limits_writes_nothing(
        self, client, factory, admin, statements, verifier
    ):
        key = _key(client, factory, admin)
        statements.clear()
        assert _verify(client, verifier, key)["code"] == "VALID"
        assert statements == []


@pytest.fixture(scope="module")
def without_redis(settings):
    """The service with ``KEYPLANE_REDIS_URL`` pointing where no Redis answers."""
    app = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with app.test_client() as client:
        yield client


class TestRedisUnreachable:
    """Windows are counted in Redis or nowhere: never allowed unseen, never a hang."""

    def test_a_verify_that_needs_a_window_answers_503_fast_and_spends_nothing(
        self, without_redis, factory, admin, verifier
    ):
        limits = [{"name": "per-minute", "limit": 5, "duration_ms": 60000, "auto_apply": True}]
        key = _key(without_redis, factory, admin, ratelimits=limits, credits={"remaining": 10})
        started = time.monotonic()
        answer = without_redis.post(
            "/v1/keys/verify", json={"key": key["full_key"]}, headers=verifier
        )
        assert time.monotonic() - started < 2
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")
        assert answer.json() == {
            "detail": "Rate limits are unavailable (Redis cannot be reached); try again shortly"
        }
        shown = without_redis.get(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin))
        assert shown.json()["credits"]["remaining"] == 10

    def test_keys_without_rate_limits_verify_as_ever(self, without_redis, factory, admin, verifier):
        plain = _key(without_redis, factory, admin)
        credited = _key(without_redis, factory, admin, credits={"remaining": 2})
        assert _verify(without_redis, verifier, plain)["code"] == "VALID"
        assert _verify(without_redis, verifier, credited)["credits_remaining"]["key"] == 1

    def test_standalone_limits_answer_503(self, without_redis, factory, admin):
        body = {"namespace": "signups", "identifier": "ip", "limit": 1, "duration_ms": 1000}
        answer = without_redis.post("/v1/ratelimit", json=body, headers=factory.auth(admin))
        assert (answer.status_code, answer.headers["Retry-After"]) == (503, "1")

    def test_the_service_is_not_ready(self, without_redis):
        answer = without_redis.get("/readyz")
        assert (answer.status_code, answer.json()) == (
            503,
            {"status": "not ready", "reason": "Redis does not answer"},
        )
