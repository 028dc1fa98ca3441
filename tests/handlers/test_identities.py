"""``/v1/identities``: customers by the account's own id, with shared credits and limits."""

from __future__ import annotations

import pytest

from keyplane.db.models import Role

PRO = {
    "meta": {"plan": "pro"},
    "credits": {"remaining": 500, "refill": {"interval": "monthly", "amount": 500}},
    "ratelimits": [{"name": "requests", "limit": 60, "duration_ms": 60000, "auto_apply": True}],
}


def _put(client, factory, user, external_id="cus_1", body=PRO):
    return client.put(f"/v1/identities/{external_id}", json=body, headers=factory.auth(user))


@pytest.fixture
def identity(client, factory, admin):
    made = _put(client, factory, admin)
    assert made.status_code == 201
    return made.json()


class TestPut:
    def test_201_creates_it(self, client, factory, admin):
        made = _put(client, factory, admin)
        assert made.status_code == 201
        assert {k: made.json()[k] for k in PRO} == {
            "meta": {"plan": "pro"},
            "credits": {"remaining": 500, "refill": {"interval": "monthly", "amount": 500}},
            "ratelimits": [
                {"name": "requests", "limit": 60, "duration_ms": 60000, "auto_apply": True}
            ],
        }
        again = client.get("/v1/identities/cus_1", headers=factory.auth(admin))
        assert again.json() == made.json()

    def test_200_replaces_the_whole_identity(self, client, factory, admin, identity):
        replaced = _put(client, factory, admin, body={"meta": {"plan": "free"}})
        assert replaced.status_code == 200
        assert (replaced.json()["meta"], replaced.json()["credits"]) == ({"plan": "free"}, None)
        assert replaced.json()["ratelimits"] == []
        assert replaced.json()["created_at"] == identity["created_at"]

    def test_401_without_a_credential(self, client):
        assert client.put("/v1/identities/cus_1", json={}).status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        assert _put(client, factory, member).status_code == 403

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.put(
            "/v1/identities/cus_1", data={"meta": "x"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_200_a_daily_refill_ignores_a_day_and_the_later_of_two_limits_stands(
        self, client, factory, admin
    ):
        body = {
            "credits": {"remaining": 1, "refill": {"interval": "daily", "amount": 1,
                                                   "refill_day": 3}},
            "ratelimits": [{"name": "a", "limit": 1, "duration_ms": 1000},
                           {"name": "a", "limit": 2, "duration_ms": 1000}],
        }  # fmt: skip
        made = _put(client, factory, admin, body=body).json()
        assert made["credits"]["refill"] == {"interval": "daily", "amount": 1}
        assert made["ratelimits"] == [
            {"name": "a", "limit": 2, "duration_ms": 1000, "auto_apply": False}
        ]

    def test_422_for_meta_past_4_kib_and_nothing_written(self, client, factory, admin):
        response = _put(client, factory, admin, body={"meta": {"notes": "x" * 4096}})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "meta"]
        assert client.get("/v1/identities/cus_1", headers=factory.auth(admin)).status_code == 404

    def test_404_for_a_line_feed_inside_the_id(self, client, factory, admin):
        response = _put(client, factory, admin, external_id="cus%0A1")
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


class TestGet:
    def test_200_for_a_member_too(self, client, factory, member, identity):
        response = client.get("/v1/identities/cus_1", headers=factory.auth(member))
        assert (response.status_code, response.json()) == (200, identity)

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/identities/cus_1").status_code == 401

    def test_403_for_an_api_key(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        response = client.get("/v1/identities/cus_1", headers={"X-API-Key": full_key})
        assert response.status_code == 403

    def test_404_for_another_accounts_identity_like_a_missing_one(self, client, factory, identity):
        other = factory.user(factory.account("globex"), Role.ADMIN)
        response = client.get("/v1/identities/cus_1", headers=factory.auth(other))
        assert (response.status_code, response.json()) == (404, {"detail": "Identity not found"})

    def test_422_for_an_account_header_that_is_not_an_id(self, client, factory, admin):
        response = client.get(
            "/v1/identities/cus_1", headers={**factory.auth(admin), "x-account-id": "x"}
        )
        assert response.status_code == 422


class TestList:
    def test_200_newest_first_with_a_cursor(self, client, factory, admin):
        for n in range(3):
            _put(client, factory, admin, external_id=f"cus_{n}", body={})
        first = client.get("/v1/identities", params={"limit": 2}, headers=factory.auth(admin))
        assert [i["external_id"] for i in first.json()["items"]] == ["cus_2", "cus_1"]
        rest = client.get(
            "/v1/identities",
            params={"limit": 2, "cursor": first.json()["next_cursor"]},
            headers=factory.auth(admin),
        ).json()
        assert ([i["external_id"] for i in rest["items"]], rest["next_cursor"]) == (["cus_0"], None)

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/identities").status_code == 401

    def test_403_for_an_api_key(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        assert client.get("/v1/identities", headers={"X-API-Key": full_key}).status_code == 403

    def test_422_for_a_limit_past_100(self, client, factory, admin):
        response = client.get("/v1/identities", params={"limit": 101}, headers=factory.auth(admin))
        assert response.status_code == 422


class TestUpdate:
    def test_200_changes_only_what_is_sent(self, client, factory, admin, identity):
        response = client.patch(
            "/v1/identities/cus_1", json={"meta": {"plan": "team"}}, headers=factory.auth(admin)
        )
        assert response.status_code == 200
        assert response.json()["meta"] == {"plan": "team"}
        assert response.json()["credits"] == identity["credits"]

    def test_401_without_a_credential(self, client):
        assert client.patch("/v1/identities/cus_1", json={}).status_code == 401

    def test_403_for_a_member(self, client, factory, member, identity):
        response = client.patch("/v1/identities/cus_1", json={}, headers=factory.auth(member))
        assert response.status_code == 403

    def test_404_for_an_identity_that_does_not_exist(self, client, factory, admin):
        response = client.patch("/v1/identities/nobody", json={}, headers=factory.auth(admin))
        assert response.status_code == 404

    def test_415_for_a_form_body(self, client, factory, admin, identity):
        response = client.patch(
            "/v1/identities/cus_1", data={"meta": "x"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_422_for_meta_over_4_kib(self, client, factory, admin, identity):
        response = client.patch(
            "/v1/identities/cus_1",
            json={"meta": {"notes": "x" * 4100}},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422


class TestDelete:
    def test_204_and_its_keys_keep_their_external_id(
        self, client, factory, admin, identity, verifier
    ):
        key = client.post(
            "/v1/api-keys", json={"external_id": "cus_1"}, headers=factory.auth(admin)
        ).json()
        assert client.delete("/v1/identities/cus_1", headers=factory.auth(admin)).status_code == 204
        verdict = client.post(
            "/v1/keys/verify", json={"key": key["full_key"]}, headers=verifier
        ).json()
        assert (verdict["code"], verdict["external_id"], verdict["identity"]) == (
            "VALID",
            "cus_1",
            None,
        )

    def test_401_without_a_credential(self, client):
        assert client.delete("/v1/identities/cus_1").status_code == 401

    def test_403_for_a_member(self, client, factory, member, identity):
        response = client.delete("/v1/identities/cus_1", headers=factory.auth(member))
        assert response.status_code == 403

    def test_404_for_an_identity_that_does_not_exist(self, client, factory, admin):
        response = client.delete("/v1/identities/nobody", headers=factory.auth(admin))
        assert response.status_code == 404

    def test_422_for_an_account_header_that_is_not_an_id(self, client, factory, admin):
        response = client.delete(
            "/v1/identities/cus_1", headers={**factory.auth(admin), "x-account-id": "x"}
        )
        assert response.status_code == 422
