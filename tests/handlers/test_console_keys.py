"""``/apikeys``: the account console contract, every documented status with its exact body."""

from __future__ import annotations

import pytest

from keyplane.db.models import Role

SEED_BODY = {"description": "string", "flatPermissionsList": ["readApplications"]}
SEED_BODY_WITH_EXPIRY = {
    "description": "string",
    "expiresAt": "2030-06-01T00:00:00Z",
    "flatPermissionsList": ["readApplications", "writeApplications"],
}
CONSOLE_FIELDS = {
    "id", "keyPrefix", "userId", "description", "flatPermissionsList", "status",
    "createdAt", "expiresAt", "lastUsedAt", "fullKey",
}  # fmt: skip
NOT_FOUND = {"error": "API key not found"}


@pytest.fixture
def key(factory, admin, acme):
    return factory.api_key(admin, acme, description="ci", permissions=("readApplications",))


class TestList:
    def test_200_lists_the_accounts_keys_in_camel_case(self, client, factory, acme, admin, key):
        other_account = factory.account("globex")
        factory.api_key(factory.user(other_account), other_account)
        response = client.get("/apikeys", headers=factory.auth(admin))
        assert response.status_code == 200
        [item] = response.json()["items"]
        assert set(item) == CONSOLE_FIELDS
        assert item["id"] == key[0].id
        assert item["flatPermissionsList"] == ["readApplications"]
        assert item["fullKey"] is None
        assert response.json()["nextCursor"] is None

    def test_400_for_a_bad_limit(self, client, factory, admin):
        response = client.get("/apikeys", params={"limit": 0}, headers=factory.auth(admin))
        assert response.status_code == 400
        assert response.json() == {"error": "limit: Input should be greater than or equal to 1"}

    def test_401_without_a_credential(self, client):
        response = client.get("/apikeys")
        assert response.status_code == 401
        assert response.json() == {"error": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_a_member_and_for_an_api_key(self, client, factory, member, key):
        as_member = client.get("/apikeys", headers=factory.auth(member))
        as_key = client.get("/apikeys", headers={"Authorization": f"Bearer {key[1]}"})
        assert as_member.status_code == as_key.status_code == 403
        assert as_member.json() == {"error": "Only account administrators can manage API keys"}
        assert as_key.json() == {"error": "API keys cannot update other API keys"}


class TestCreate:
    def test_201_returns_the_full_key_once(self, client, factory, admin):
        response = client.post("/apikeys", json=SEED_BODY_WITH_EXPIRY, headers=factory.auth(admin))
        assert response.status_code == 201
        body = response.json()
        assert set(body) == CONSOLE_FIELDS
        assert body["fullKey"].startswith(body["keyPrefix"])
        assert body["expiresAt"] == "2030-06-01T00:00:00Z"
        assert body["flatPermissionsList"] == ["readApplications", "writeApplications"]
        stored = factory.stored_key(body["id"])
        assert stored.key_digest == factory.secrets.api_key_digest(body["fullKey"])

    def test_400_invalid_permissions_provided(self, client, factory, admin):
        before = factory.count_keys()
        response = client.post(
            "/apikeys",
            json={"description": "x", "flatPermissionsList": ["readApplications", "rootAccess"]},
            headers=factory.auth(admin),
        )
        assert response.status_code == 400
        assert response.json() == {"error": "Invalid permissions provided"}
        assert factory.count_keys() == before

    def test_400_for_a_body_that_does_not_match_the_schema(self, client, factory, admin):
        response = client.post("/apikeys", json={"description": 7}, headers=factory.auth(admin))
        assert response.status_code == 400
        assert response.json() == {
            "error": "description: Input should be a valid string; "
            "flatPermissionsList: Field required"
        }

    def test_401_with_an_invalid_token(self, client):
        response = client.post(
            "/apikeys", json=SEED_BODY, headers={"Authorization": "Bearer expired-or-forged"}
        )
        assert response.status_code == 401
        assert response.json() == {"error": "Could not validate credentials"}

    def test_403_for_an_api_key_as_bearer(self, client, factory, key):
        before = factory.count_keys()
        response = client.post(
            "/apikeys", json=SEED_BODY, headers={"Authorization": f"Bearer {key[1]}"}
        )
        assert response.status_code == 403
        assert response.json() == {"error": "API keys cannot update other API keys"}
        assert factory.count_keys() == before

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.post("/apikeys", data={"description": "x"}, headers=factory.auth(admin))
        assert response.status_code == 415
        assert response.json() == {"error": "Unsupported Media Type"}


class TestGet:
    def test_403_for_an_account_header_that_names_no_account_of_the_callers(
        self, client, factory, admin, key
    ):
        # Any string, as the console contract types the header.
        for account in ("acme", "9999", " "):
            response = client.get(
                f"/apikeys/{key[0].id}", headers={**factory.auth(admin), "x-account-id": account}
            )
            assert response.status_code == 403
            assert response.json() == {"error": "You are not a member of that account"}

    def test_400_for_an_overlong_id(self, client, factory, admin, key):
        auth = factory.auth(admin)
        overlong = client.get(f"/apikeys/{'1' * 65}", headers=auth)
        assert overlong.status_code == 400
        assert overlong.json() == {"error": "id: String should have at most 64 characters"}

    def test_200_answers_the_key(self, client, factory, admin, key):
        response = client.get(f"/apikeys/{key[0].id}", headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json()["description"] == "ci"
        assert response.json()["status"] == "active"

    def test_401_without_a_credential(self, client, key):
        assert client.get(f"/apikeys/{key[0].id}").status_code == 401

    def test_403_for_an_api_key_in_x_api_key(self, client, key):
        response = client.get(f"/apikeys/{key[0].id}", headers={"X-API-Key": key[1]})
        assert response.status_code == 403

    @pytest.mark.parametrize("key_id", ["999999999", "abc", "1e3", "-1", "99999999999999999999999"])
    def test_404_for_an_unknown_or_non_numeric_id(self, client, factory, admin, key_id):
        response = client.get(f"/apikeys/{key_id}", headers=factory.auth(admin))
        assert response.status_code == 404
        assert response.json() == NOT_FOUND


class TestUpdate:
    """Seed 000: PATCH /apikeys/{id} with ApiKeyInput answers {"success": true}."""

    @pytest.mark.parametrize("body", [SEED_BODY, SEED_BODY_WITH_EXPIRY])
    def test_200_both_seed_bodies_and_get_shows_the_change(self, client, factory, admin, key, body):
        url = f"/apikeys/{key[0].id}"
        response = client.patch(url, json=body, headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json() == {"success": True}
        after = client.get(url, headers=factory.auth(admin)).json()
        assert after["description"] == "string"
        assert after["flatPermissionsList"] == body["flatPermissionsList"]
        assert after["expiresAt"] == body.get("expiresAt")

    @pytest.mark.parametrize("never", [None, ""])
    def test_200_null_or_empty_expires_at_clears_the_expiry(
        self, client, factory, admin, key, never
    ):
        url, auth = f"/apikeys/{key[0].id}", factory.auth(admin)
        client.patch(url, json=SEED_BODY_WITH_EXPIRY, headers=auth)
        response = client.patch(url, json=SEED_BODY | {"expiresAt": never}, headers=auth)
        assert response.json() == {"success": True}
        assert client.get(url, headers=auth).json()["expiresAt"] is None
        assert factory.stored_key(key[0].id).expires_at is None

    def test_200_the_same_body_again_changes_nothing_and_audits_once(
        self, client, factory, admin, key
    ):
        url, auth = f"/apikeys/{key[0].id}", factory.auth(admin)
        for _ in range(3):
            response = client.patch(url, json=SEED_BODY_WITH_EXPIRY, headers=auth)
            assert response.json() == {"success": True}
        events = client.get(
            "/v1/audit-events", params={"action": "key.updated"}, headers=auth
        ).json()["items"]
        assert len(events) == 1
        assert client.get(url, headers=auth).json()["expiresAt"] == "2030-06-01T00:00:00Z"

    def test_200_omitted_expires_at_keeps_the_expiry(self, client, factory, admin, key):
        url, auth = f"/apikeys/{key[0].id}", factory.auth(admin)
        client.patch(url, json=SEED_BODY_WITH_EXPIRY, headers=auth)
        client.patch(url, json=SEED_BODY, headers=auth)
        assert client.get(url, headers=auth).json()["expiresAt"] == "2030-06-01T00:00:00Z"

    def test_400_invalid_permissions_provided_changes_nothing(self, client, factory, admin, key):
        response = client.patch(
            f"/apikeys/{key[0].id}",
            json={"description": "changed", "flatPermissionsList": ["doesNotExist"]},
            headers=factory.auth(admin),
        )
        assert response.status_code == 400
        assert response.json() == {"error": "Invalid permissions provided"}
        stored = factory.stored_key(key[0].id)
        assert (stored.description, stored.permissions) == ("ci", ["readApplications"])

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            ({"description": "x"}, "flatPermissionsList: Field required"),
            (
                {"description": "x", "flatPermissionsList": [], "expiresAt": "soon"},
                "expiresAt: Input should be a valid RFC 3339 date-time with an offset",
            ),
            (
                {"description": None, "flatPermissionsList": []},
                "description: Input should be a valid string",
            ),
        ],
    )
    def test_400_for_a_body_that_does_not_match_the_schema(
        self, client, factory, admin, key, body, error
    ):
        response = client.patch(f"/apikeys/{key[0].id}", json=body, headers=factory.auth(admin))
        assert response.status_code == 400
        assert response.json() == {"error": error}
        assert factory.stored_key(key[0].id).description == "ci"

    def test_401_without_a_credential(self, client, factory, key):
        response = client.patch(f"/apikeys/{key[0].id}", json=SEED_BODY)
        assert response.status_code == 401
        assert response.json() == {"error": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_a_member(self, client, factory, member, key):
        response = client.patch(
            f"/apikeys/{key[0].id}", json=SEED_BODY, headers=factory.auth(member)
        )
        assert response.status_code == 403
        assert response.json() == {"error": "Only account administrators can manage API keys"}
        assert factory.stored_key(key[0].id).description == "ci"

    def test_403_for_an_api_key_as_bearer_even_on_itself(self, client, factory, key):
        response = client.patch(
            f"/apikeys/{key[0].id}", json=SEED_BODY, headers={"Authorization": f"Bearer {key[1]}"}
        )
        assert response.status_code == 403
        assert response.json() == {"error": "API keys cannot update other API keys"}
        assert factory.stored_key(key[0].id).description == "ci"

    def test_403_for_x_account_id_of_another_account(self, client, factory, admin, key):
        globex = factory.account("globex")
        response = client.patch(
            f"/apikeys/{key[0].id}",
            json=SEED_BODY,
            headers={**factory.auth(admin), "x-account-id": str(globex.id)},
        )
        assert response.status_code == 403
        assert response.json() == {"error": "You are not a member of that account"}

    def test_404_for_unknown_non_numeric_and_other_accounts_ids(self, client, factory, key):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        for key_id in (str(key[0].id), "123456789", "not-a-number"):
            response = client.patch(
                f"/apikeys/{key_id}", json=SEED_BODY, headers=factory.auth(outsider)
            )
            assert response.status_code == 404
            assert response.json() == NOT_FOUND
        assert factory.stored_key(key[0].id).description == "ci"

    def test_415_for_a_form_body(self, client, factory, admin, key):
        response = client.patch(
            f"/apikeys/{key[0].id}", data={"description": "x"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415


class TestRevoke:
    def test_400_for_an_overlong_id_and_nothing_changes(self, client, factory, admin, key):
        response = client.delete(f"/apikeys/{'9' * 65}", headers=factory.auth(admin))
        assert response.status_code == 400
        assert response.json() == {"error": "id: String should have at most 64 characters"}
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_200_revokes(self, client, factory, admin, key):
        response = client.delete(f"/apikeys/{key[0].id}", headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json() == {"success": True}
        assert (
            client.get(f"/apikeys/{key[0].id}", headers=factory.auth(admin)).json()["status"]
            == "revoked"
        )
        assert client.get("/v1/users", headers={"X-API-Key": key[1]}).status_code == 401

    def test_401_without_a_credential(self, client, factory, key):
        assert client.delete(f"/apikeys/{key[0].id}").status_code == 401
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_403_for_a_member(self, client, factory, member, key):
        assert (
            client.delete(f"/apikeys/{key[0].id}", headers=factory.auth(member)).status_code == 403
        )
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_404_for_another_accounts_key(self, client, factory, key):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        response = client.delete(f"/apikeys/{key[0].id}", headers=factory.auth(outsider))
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
        assert factory.stored_key(key[0].id).revoked_at is None


class TestBothSurfacesShareOneRecord:
    def test_a_console_change_reads_back_identically_on_v1(self, client, factory, admin, key):
        auth = factory.auth(admin)
        client.patch(f"/apikeys/{key[0].id}", json=SEED_BODY_WITH_EXPIRY, headers=auth)
        console = client.get(f"/apikeys/{key[0].id}", headers=auth).json()
        v1 = client.get(f"/v1/api-keys/{key[0].id}", headers=auth).json()
        assert _as_console(v1) == console

    def test_a_v1_change_reads_back_identically_on_the_console(self, client, factory, admin, key):
        auth = factory.auth(admin)
        client.patch(
            f"/v1/api-keys/{key[0].id}",
            json={
                "description": "via v1",
                "expires_at": "2031-01-01T00:00:00+01:00",
                "permissions": ["writeApplications"],
            },
            headers=auth,
        )
        client.delete(f"/v1/api-keys/{key[0].id}", headers=auth)
        console = client.get(f"/apikeys/{key[0].id}", headers=auth).json()
        v1 = client.get(f"/v1/api-keys/{key[0].id}", headers=auth).json()
        assert _as_console(v1) == console
        assert console["expiresAt"] == "2030-12-31T23:00:00Z"
        assert console["status"] == "revoked"


def _as_console(v1: dict) -> dict:
    return {
        "id": v1["id"],
        "keyPrefix": v1["key_prefix"],
        "userId": v1["user_id"],
        "description": v1["description"],
        "flatPermissionsList": v1["permissions"],
        "status": v1["status"],
        "createdAt": v1["created_at"],
        "expiresAt": v1["expires_at"],
        "lastUsedAt": v1["last_used_at"],
        "fullKey": v1["full_key"],
    }
