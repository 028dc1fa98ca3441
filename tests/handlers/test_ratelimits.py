"""``/v1/ratelimit``: standalone limits for what is not a key, and their overrides."""

from __future__ import annotations

import pytest

SIGNUPS = {"namespace": "signups", "identifier": "203.0.113.7", "limit": 3, "duration_ms": 60000}
OVERRIDE = "/v1/ratelimit/signups/overrides/203.0.113.7"


def _limit(client, factory, user, **changes):
    return client.post("/v1/ratelimit", json=SIGNUPS | changes, headers=factory.auth(user))


class TestLimit:
    def test_200_counts_up_to_the_limit_then_refuses_until_the_window_ends(
        self, counting, factory, admin, clock
    ):
        answers = [_limit(counting, factory, admin).json() for _ in range(4)]
        assert [(a["success"], a["remaining"]) for a in answers] == [
            (True, 2),
            (True, 1),
            (True, 0),
            (False, 0),
        ]
        assert {a["reset_at"] for a in answers} == {"2027-01-30T12:01:00Z"}
        assert _limit(counting, factory, admin, identifier="198.51.100.1").json()["success"]
        clock.move(minutes=1)
        again = _limit(counting, factory, admin).json()
        assert (again["success"], again["remaining"], again["reset_at"]) == (
            True,
            2,
            "2027-01-30T12:02:00Z",
        )

    def test_200_a_cost_of_zero_checks_and_a_cost_too_big_counts_nothing(
        self, counting, factory, admin, clock
    ):
        assert _limit(counting, factory, admin, cost=0).json()["remaining"] == 3
        refused = _limit(counting, factory, admin, cost=4).json()
        assert (refused["success"], refused["remaining"]) == (False, 3)
        assert _limit(counting, factory, admin, cost=3).json() == {
            "success": True,
            "limit": 3,
            "remaining": 0,
            "reset_at": "2027-01-30T12:01:00Z",
        }
        assert _limit(counting, factory, admin, cost=0).json()["success"] is False

    def test_200_namespaces_are_each_accounts_own(self, counting, factory, admin, clock):
        other = factory.user(factory.account("globex"))
        for _ in range(3):
            assert _limit(counting, factory, admin).json()["success"]
        assert _limit(counting, factory, other).json()["remaining"] == 2

    def test_200_an_override_sets_the_identifiers_own_limit(self, counting, factory, admin, clock):
        auth = factory.auth(admin)
        counting.put(OVERRIDE, json={"limit": 1, "duration_ms": 60000}, headers=auth)
        first, second = (_limit(counting, factory, admin).json() for _ in range(2))
        assert (first["success"], first["limit"], first["remaining"]) == (True, 1, 0)
        assert second["success"] is False
        counting.delete(OVERRIDE, headers=auth)
        assert _limit(counting, factory, admin).json() == {
            "success": True,
            "limit": 3,
            "remaining": 1,  # the override's one use counted in the same window
            "reset_at": "2027-01-30T12:01:00Z",
        }

    def test_401_without_a_token(self, counting):
        assert counting.post("/v1/ratelimit", json=SIGNUPS).status_code == 401

    def test_403_for_a_member_and_for_an_api_key(self, counting, factory, acme, admin, member):
        assert _limit(counting, factory, member).status_code == 403
        _, full_key = factory.api_key(admin, acme)
        as_key = counting.post("/v1/ratelimit", json=SIGNUPS, headers={"X-API-Key": full_key})
        assert as_key.status_code == 401  # the operation takes a token, never a key

    def test_403_for_an_api_key_without_the_right_to_verify(self, counting, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme, permissions=("readApplications",))
        headers = {"Authorization": f"Bearer {full_key}"}
        answer = counting.post("/v1/ratelimit", json=SIGNUPS, headers=headers)
        assert answer.status_code == 403
        assert "keyplane.verify" in answer.json()["detail"]

    def test_200_a_verifier_key_spends_the_accounts_namespaces_as_an_admin_does(
        self, counting, factory, acme, admin, clock
    ):
        _, verifier = factory.verifier_key(admin, acme)
        by_key = [
            counting.post("/v1/ratelimit", json=SIGNUPS, headers=verifier).json() for _ in range(2)
        ]
        by_admin = _limit(counting, factory, admin).json()
        assert [a["remaining"] for a in [*by_key, by_admin]] == [2, 1, 0]
        assert not counting.post("/v1/ratelimit", json=SIGNUPS, headers=verifier).json()["success"]

    def test_401_for_a_revoked_verifier_key(self, counting, factory, acme, admin):
        record, verifier = factory.verifier_key(admin, acme)
        revoked = counting.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert revoked.status_code == 200
        assert counting.post("/v1/ratelimit", json=SIGNUPS, headers=verifier).status_code == 401

    def test_403_for_an_account_the_admin_is_not_in(self, counting, factory, admin):
        other = factory.account("globex")
        headers = factory.auth(admin) | {"X-Account-Id": str(other.id)}
        assert counting.post("/v1/ratelimit", json=SIGNUPS, headers=headers).status_code == 403

    def test_415_for_a_form_body(self, counting, factory, admin):
        response = counting.post("/v1/ratelimit", data=SIGNUPS, headers=factory.auth(admin))
        assert response.status_code == 415

    @pytest.mark.parametrize(
        "wrong",
        [
            {"limit": 0},
            {"duration_ms": 999},
            {"cost": 1001},
            {"namespace": "a b"},
            {"identifier": ""},
        ],
    )
    def test_422_for_a_value_out_of_bounds(self, counting, factory, admin, wrong):
        response = _limit(counting, factory, admin, **wrong)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", next(iter(wrong))]


class TestPutOverride:
    def test_201_sets_it_audited(self, client, factory, admin):
        auth = factory.auth(admin)
        made = client.put(OVERRIDE, json={"limit": 100, "duration_ms": 3600000}, headers=auth)
        assert (made.status_code, made.json()) == (
            201,
            {"namespace": "signups", "identifier": "203.0.113.7", "limit": 100,
             "duration_ms": 3600000},
        )  # fmt: skip
        events = client.get(
            "/v1/audit-events", params={"action": "ratelimit.override_set"}, headers=auth
        ).json()["items"]
        assert [e["changes"] for e in events] == [{"limit": 100, "duration_ms": 3600000}]

    def test_200_replaces_it(self, client, factory, admin):
        auth = factory.auth(admin)
        client.put(OVERRIDE, json={"limit": 100, "duration_ms": 3600000}, headers=auth)
        again = client.put(OVERRIDE, json={"limit": 5, "duration_ms": 1000}, headers=auth)
        assert (again.status_code, again.json()["limit"], again.json()["duration_ms"]) == (
            200,
            5,
            1000,
        )

    def test_401_without_a_credential(self, client):
        assert client.put(OVERRIDE, json={"limit": 1, "duration_ms": 1000}).status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        body = {"limit": 1, "duration_ms": 1000}
        assert client.put(OVERRIDE, json=body, headers=factory.auth(member)).status_code == 403

    def test_404_for_a_line_feed_inside_the_identifier(self, client, factory, admin):
        body = {"limit": 1, "duration_ms": 1000}
        response = client.put(
            "/v1/ratelimit/signups/overrides/a%0Ab", json=body, headers=factory.auth(admin)
        )
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.put(OVERRIDE, data={"limit": "1"}, headers=factory.auth(admin))
        assert response.status_code == 415

    def test_422_for_a_limit_of_zero(self, client, factory, admin):
        body = {"limit": 0, "duration_ms": 1000}
        response = client.put(OVERRIDE, json=body, headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "limit"]


class TestDeleteOverride:
    def test_204_removes_it_and_then_404(self, client, factory, admin):
        auth = factory.auth(admin)
        client.put(OVERRIDE, json={"limit": 1, "duration_ms": 1000}, headers=auth)
        assert client.delete(OVERRIDE, headers=auth).status_code == 204
        assert client.delete(OVERRIDE, headers=auth).status_code == 404

    def test_404_for_none(self, client, factory, admin):
        assert client.delete(OVERRIDE, headers=factory.auth(admin)).status_code == 404

    def test_401_without_a_credential(self, client):
        assert client.delete(OVERRIDE).status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        assert client.delete(OVERRIDE, headers=factory.auth(member)).status_code == 403

    def test_422_for_a_namespace_with_a_space(self, client, factory, admin):
        response = client.delete("/v1/ratelimit/a%20b/overrides/x", headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "namespace"]
