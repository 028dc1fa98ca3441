"""``/v1/account/policy``, and the policy at work on both APIs' key changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

NO_POLICY = {
    "max_key_lifetime_seconds": None,
    "expiry_required": False,
    "member_permissions": None,
    "on_leak": "revoke",
}
DAY = 24 * 3600


def _put(client, factory, user, **policy):
    return client.put("/v1/account/policy", json=policy, headers=factory.auth(user))


def _in(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


class TestGetPolicy:
    def test_200_no_policy_at_first_and_members_may_read_it(self, client, factory, member):
        response = client.get("/v1/account/policy", headers=factory.auth(member))
        assert response.status_code == 200
        assert response.json() == NO_POLICY

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/account/policy").status_code == 401

    def test_403_for_an_api_key_as_for_every_other_read(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        for headers in ({"X-API-Key": full_key}, {"Authorization": f"Bearer {full_key}"}):
            response = client.get("/v1/account/policy", headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot read the account's policy"}

    def test_403_for_another_account_in_x_account_id(self, client, factory, admin):
        globex = factory.account("globex")
        response = client.get(
            "/v1/account/policy", headers={**factory.auth(admin), "x-account-id": str(globex.id)}
        )
        assert response.status_code == 403

    def test_200_ignores_an_unknown_query_parameter_as_fastapi_does(self, client, factory, admin):
        response = client.get("/v1/account/policy", params={"x": "1"}, headers=factory.auth(admin))
        assert (response.status_code, response.json()) == (200, NO_POLICY)

    def test_422_for_an_account_header_that_is_not_an_id(self, client, factory, admin):
        response = client.get(
            "/v1/account/policy", headers={**factory.auth(admin), "x-account-id": "acme"}
        )
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert (error["loc"], error["type"], error["input"]) == (
            ["header", "x-account-id"],
            "string_pattern_mismatch",
            "acme",
        )


class TestPutPolicy:
    def test_200_replaces_the_whole_policy_and_audits_it(self, client, factory, admin):
        response = _put(
            client, factory, admin, max_key_lifetime_seconds=30 * DAY, expiry_required=True
        )
        assert response.status_code == 200
        expected = NO_POLICY | {"max_key_lifetime_seconds": 30 * DAY, "expiry_required": True}
        assert response.json() == expected
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == expected
        # Omitted fields take their defaults again.
        assert _put(client, factory, admin, member_permissions=[]).json() == NO_POLICY | {
            "member_permissions": []
        }
        events = client.get(
            "/v1/audit-events", params={"action": "policy.updated"}, headers=factory.auth(admin)
        ).json()["items"]
        assert events[1]["changes"] == {
            "max_key_lifetime_seconds": {"from": None, "to": 30 * DAY},
            "expiry_required": {"from": False, "to": True},
        }

    def test_401_without_a_credential(self, client):
        assert client.put("/v1/account/policy", json={}).status_code == 401

    def test_403_for_a_member_and_for_an_api_key(self, client, factory, acme, admin, member):
        assert _put(client, factory, member, expiry_required=True).status_code == 403
        _, full_key = factory.api_key(admin, acme)
        by_key = client.put(
            "/v1/account/policy", json={"expiry_required": True}, headers={"X-API-Key": full_key}
        )
        assert by_key.status_code == 403
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == NO_POLICY

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.put(
            "/v1/account/policy", data={"expiry_required": "true"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_422_for_bounds_and_permissions_not_in_the_catalog(self, client, factory, admin):
        short = _put(client, factory, admin, max_key_lifetime_seconds=1)
        assert short.status_code == 422
        assert short.json()["detail"][0]["loc"] == ["body", "max_key_lifetime_seconds"]
        unknown = _put(client, factory, admin, member_permissions=["readApplications", "nope"])
        assert unknown.status_code == 422
        assert unknown.json()["detail"][0]["loc"] == ["body", "member_permissions", 1]
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == NO_POLICY


def _patch(client, factory, user, **fields):
    return client.patch("/v1/account/policy", json=fields, headers=factory.auth(user))


class TestPatchPolicy:
    def test_200_changes_only_the_fields_sent_and_audits_them(self, client, factory, admin):
        _put(client, factory, admin, max_key_lifetime_seconds=30 * DAY, expiry_required=True)
        response = _patch(client, factory, admin, on_leak="disable")
        assert response.status_code == 200
        expected = NO_POLICY | {
            "max_key_lifetime_seconds": 30 * DAY,
            "expiry_required": True,
            "on_leak": "disable",
        }
        assert response.json() == expected
        cleared = _patch(client, factory, admin, max_key_lifetime_seconds=None)
        assert cleared.json() == expected | {"max_key_lifetime_seconds": None}
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == (
            expected | {"max_key_lifetime_seconds": None}
        )
        events = client.get(
            "/v1/audit-events", params={"action": "policy.updated"}, headers=factory.auth(admin)
        ).json()["items"]
        assert [event["changes"] for event in events[:2]] == [
            {"max_key_lifetime_seconds": {"from": 30 * DAY, "to": None}},
            {"on_leak": {"from": "revoke", "to": "disable"}},
        ]
        assert _patch(client, factory, admin).json() == cleared.json()  # nothing sent: no change

    def test_401_without_a_credential(self, client):
        assert client.patch("/v1/account/policy", json={}).status_code == 401

    def test_403_for_a_member_and_for_an_api_key(self, client, factory, acme, admin, member):
        refused = _patch(client, factory, member, expiry_required=True)
        assert (refused.status_code, refused.json()) == (
            403,
            {"detail": "Only account admins can do this"},
        )
        _, full_key = factory.api_key(admin, acme)
        by_key = client.patch(
            "/v1/account/policy", json={"expiry_required": True}, headers={"X-API-Key": full_key}
        )
        assert (by_key.status_code, by_key.json()) == (
            403,
            {"detail": "API keys cannot change the account's policy"},
        )
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == NO_POLICY

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.patch(
            "/v1/account/policy", data={"expiry_required": "true"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_422_for_bounds_unknown_fields_and_permissions_not_in_the_catalog(
        self, client, factory, admin
    ):
        for fields, loc in [
            ({"max_key_lifetime_seconds": 1}, ["body", "max_key_lifetime_seconds"]),
            ({"expiry_required": None}, ["body", "expiry_required"]),
            ({"on_leak": "ignore"}, ["body", "on_leak"]),
            ({"max_keys": 3}, ["body", "max_keys"]),
            ({"member_permissions": ["nope"]}, ["body", "member_permissions", 0]),
        ]:
            response = _patch(client, factory, admin, **fields)
            assert response.status_code == 422, fields
            assert response.json()["detail"][0]["loc"] == loc
        assert client.get("/v1/account/policy", headers=factory.auth(admin)).json() == NO_POLICY


class TestPolicyAtWork:
    """What a policy refuses, on both APIs, and that nothing is written when it does."""

    def test_a_key_must_expire_within_the_limit(self, client, factory, admin):
        _put(client, factory, admin, max_key_lifetime_seconds=30 * DAY)
        for body in ({}, {"expires_at": None}, {"expires_at": _in(31)}):
            refused = client.post("/v1/api-keys", json=body, headers=factory.auth(admin))
            assert refused.status_code == 403, body
            assert "at most 2592000 seconds" in refused.json()["detail"]
        console = client.post(
            "/apikeys",
            json={"description": "d", "flatPermissionsList": [], "expiresAt": _in(31)},
            headers=factory.auth(admin),
        )
        assert console.status_code == 403
        assert "at most 2592000 seconds" in console.json()["error"]
        assert factory.count_keys() == 0
        made = client.post(
            "/v1/api-keys", json={"expires_at": _in(29)}, headers=factory.auth(admin)
        )
        assert made.status_code == 201
        key_id = made.json()["id"]
        later = client.patch(
            f"/v1/api-keys/{key_id}", json={"expires_at": _in(40)}, headers=factory.auth(admin)
        )
        assert later.status_code == 403
        # A change that leaves the expiry alone is not judged again.
        renamed = client.patch(
            f"/v1/api-keys/{key_id}", json={"description": "renamed"}, headers=factory.auth(admin)
        )
        assert renamed.status_code == 200
        assert renamed.json()["expires_at"] == made.json()["expires_at"]

    def test_expiry_required_without_a_limit(self, client, factory, admin):
        _put(client, factory, admin, expiry_required=True)
        refused = client.post("/v1/api-keys", json={}, headers=factory.auth(admin))
        assert refused.json() == {
            "detail": "This account's policy requires keys to expire: set an expires_at"
        }
        made = client.post(
            "/v1/api-keys", json={"expires_at": _in(3650)}, headers=factory.auth(admin)
        )
        assert made.status_code == 201
        cleared = client.patch(
            f"/v1/api-keys/{made.json()['id']}",
            json={"expires_at": None},
            headers=factory.auth(admin),
        )
        assert cleared.status_code == 403

    def test_members_grant_only_what_members_may(self, client, factory, admin, member):
        _put(client, factory, admin, member_permissions=["readApplications"])
        refused = client.post(
            "/v1/api-keys",
            json={"permissions": ["readApplications", "writeApplications"]},
            headers=factory.auth(member),
        )
        assert refused.status_code == 403
        assert "writeApplications" in refused.json()["detail"]
        assert factory.count_keys() == 0
        made = client.post(
            "/v1/api-keys", json={"permissions": ["readApplications"]}, headers=factory.auth(member)
        )
        assert made.status_code == 201
        key_id = made.json()["id"]
        # An admin grants more; the member keeps it when changing other permissions...
        granted = client.patch(
            f"/v1/api-keys/{key_id}",
            json={"permissions": ["readApplications", "writeApplications"]},
            headers=factory.auth(admin),
        )
        assert granted.status_code == 200
        kept = client.patch(
            f"/v1/api-keys/{key_id}",
            json={"permissions": ["writeApplications"]},
            headers=factory.auth(member),
        )
        assert kept.status_code == 200
        # ... but cannot take it back once dropped.
        again = client.patch(
            f"/v1/api-keys/{key_id}",
            json={"permissions": ["readApplications", "writeApplications"]},
            headers=factory.auth(member),
        )
        assert again.status_code == 200  # readApplications is allowed to members
        assert client.get(f"/v1/api-keys/{key_id}", headers=factory.auth(admin)).json()[
            "permissions"
        ] == ["readApplications", "writeApplications"]
        client.patch(
            f"/v1/api-keys/{key_id}", json={"permissions": []}, headers=factory.auth(member)
        )
        refused_again = client.patch(
            f"/v1/api-keys/{key_id}",
            json={"permissions": ["writeApplications"]},
            headers=factory.auth(member),
        )
        assert refused_again.status_code == 403
        assert (
            client.get(f"/v1/api-keys/{key_id}", headers=factory.auth(admin)).json()["permissions"]
            == []
        )

    @pytest.mark.parametrize("wanted", [None, "later"])
    def test_a_member_cannot_extend_or_clear_an_expiry_an_admin_set(
        self, client, factory, admin, member, wanted
    ):
        made = client.post("/v1/api-keys", json={}, headers=factory.auth(member)).json()
        set_by_admin = client.patch(
            f"/v1/api-keys/{made['id']}", json={"expires_at": _in(10)}, headers=factory.auth(admin)
        ).json()
        body = {"expires_at": None if wanted is None else _in(20)}
        refused = client.patch(
            f"/v1/api-keys/{made['id']}", json=body, headers=factory.auth(member)
        )
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "An admin set this key's expiry: you may only bring it forward"
        }
        stored = client.get(f"/v1/api-keys/{made['id']}", headers=factory.auth(member)).json()
        assert stored["expires_at"] == set_by_admin["expires_at"]
        sooner = client.patch(
            f"/v1/api-keys/{made['id']}", json={"expires_at": _in(5)}, headers=factory.auth(member)
        )
        assert sooner.status_code == 200

    def test_a_member_may_change_an_expiry_they_set(self, client, factory, member):
        made = client.post(
            "/v1/api-keys", json={"expires_at": _in(10)}, headers=factory.auth(member)
        ).json()
        cleared = client.patch(
            f"/v1/api-keys/{made['id']}", json={"expires_at": None}, headers=factory.auth(member)
        )
        assert (cleared.status_code, cleared.json()["expires_at"]) == (200, None)
