"""``/v1/permissions``: per-account catalogs."""

from __future__ import annotations

from keyplane.db.models import Role

DEFAULT_IDS = ["readApplications", "writeApplications"]


class TestList:
    def test_200_a_new_account_has_the_default_catalog(self, client, factory, member):
        response = client.get("/v1/permissions", headers=factory.auth(member))
        assert response.status_code == 200
        assert [p["id"] for p in response.json()["items"]] == DEFAULT_IDS

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/permissions").status_code == 401

    def test_403_for_an_api_key(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        response = client.get("/v1/permissions", headers={"X-API-Key": full_key})
        assert response.status_code == 403
        assert response.json() == {"detail": "API keys cannot manage permissions"}

    def test_200_ignores_an_unknown_query_parameter_as_fastapi_does(self, client, factory, member):
        response = client.get("/v1/permissions", params={"q": "x"}, headers=factory.auth(member))
        assert response.status_code == 200
        assert [p["id"] for p in response.json()["items"]] == [
            "readApplications",
            "writeApplications",
        ]

    def test_422_for_an_account_header_that_is_not_an_id(self, client, factory, admin):
        response = client.get(
            "/v1/permissions", headers={**factory.auth(admin), "x-account-id": "acme"}
        )
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert (error["loc"], error["type"], error["input"]) == (
            ["header", "x-account-id"],
            "string_pattern_mismatch",
            "acme",
        )


class TestCreate:
    def test_201_adds_a_permission_keys_can_then_hold(self, client, factory, acme, admin):
        response = client.post(
            "/v1/permissions",
            json={"id": "readBilling", "description": "See invoices"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201
        assert response.json()["id"] == "readBilling"
        assert response.json()["description"] == "See invoices"
        key = client.post(
            "/v1/api-keys", json={"permissions": ["readBilling"]}, headers=factory.auth(admin)
        )
        assert key.status_code == 201
        # Another account's catalog is untouched.
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        theirs = client.get("/v1/permissions", headers=factory.auth(outsider)).json()["items"]
        assert [p["id"] for p in theirs] == DEFAULT_IDS

    def test_401_without_a_credential(self, client):
        assert client.post("/v1/permissions", json={"id": "x"}).status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        response = client.post("/v1/permissions", json={"id": "x"}, headers=factory.auth(member))
        assert response.status_code == 403

    def test_409_for_an_existing_id(self, client, factory, admin):
        response = client.post(
            "/v1/permissions", json={"id": "readApplications"}, headers=factory.auth(admin)
        )
        assert response.status_code == 409
        assert response.json() == {"detail": "Permission already exists"}

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.post("/v1/permissions", data={"id": "x"}, headers=factory.auth(admin))
        assert response.status_code == 415

    def test_422_for_an_id_that_is_not_a_name(self, client, factory, admin):
        response = client.post(
            "/v1/permissions", json={"id": "has spaces"}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "id"]
        assert response.json()["detail"][0]["type"] == "string_pattern_mismatch"


class TestDelete:
    def test_204_removes_an_unused_permission(self, client, factory, admin):
        response = client.delete("/v1/permissions/writeApplications", headers=factory.auth(admin))
        assert response.status_code == 204
        left = client.get("/v1/permissions", headers=factory.auth(admin)).json()["items"]
        assert [p["id"] for p in left] == ["readApplications"]

    def test_401_without_a_credential(self, client):
        assert client.delete("/v1/permissions/readApplications").status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        response = client.delete("/v1/permissions/readApplications", headers=factory.auth(member))
        assert response.status_code == 403

    def test_404_for_a_permission_not_in_the_catalog(self, client, factory, admin):
        response = client.delete("/v1/permissions/noSuchThing", headers=factory.auth(admin))
        assert response.status_code == 404
        assert response.json() == {"detail": "Permission not found"}

    def test_409_while_a_key_holds_it_then_204_once_released(self, client, factory, acme, admin):
        key, _ = factory.api_key(admin, acme, permissions=("readApplications",))
        auth = factory.auth(admin)
        refused = client.delete("/v1/permissions/readApplications", headers=auth)
        assert refused.status_code == 409
        assert refused.json() == {
            "detail": "Permission is still held by API keys; remove it from them first"
        }
        assert factory.stored_key(key.id).permissions == ["readApplications"]
        client.patch(f"/v1/api-keys/{key.id}", json={"permissions": []}, headers=auth)
        assert client.delete("/v1/permissions/readApplications", headers=auth).status_code == 204

    def test_422_for_an_id_that_is_not_a_name(self, client, factory, admin):
        response = client.delete("/v1/permissions/9lives", headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "permission_id"]


def test_a_permission_named_like_keyplanes_own_in_another_case_is_the_customers(
    client, factory, admin
):
    headers = factory.auth(admin)
    made = client.post("/v1/permissions", json={"id": "Keyplane.read"}, headers=headers)
    assert made.status_code == 201
    listed = client.get("/v1/permissions", headers=headers).json()["items"]
    assert "Keyplane.read" in [p["id"] for p in listed]  # on SQLite too: compared exactly
