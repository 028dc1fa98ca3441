"""``/v1/users/me`` and ``/v1/users``."""

from __future__ import annotations

import pytest

from db.models import Role
from tests.factories import PASSWORD


@pytest.fixture
def acme(factory):
    return factory.account("acme")


@pytest.fixture
def admin(factory, acme):
    return factory.user(acme, Role.ADMIN, username="ada")


@pytest.fixture
def member(factory, acme):
    return factory.user(acme, Role.MEMBER, username="max")


class TestMe:
    def test_200_lists_the_users_accounts_with_roles(self, client, factory, acme, admin):
        globex = factory.account("globex")
        factory.join(admin, globex, Role.MEMBER)
        response = client.get("/v1/users/me", headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json() == {
            "id": admin.id,
            "username": "ada",
            "accounts": [
                {"id": acme.id, "name": "acme", "role": "admin"},
                {"id": globex.id, "name": "globex", "role": "member"},
            ],
        }

    def test_401_without_a_credential(self, client):
        response = client.get("/v1/users/me")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_an_api_key_principal(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        response = client.get("/v1/users/me", headers={"X-API-Key": full_key})
        assert response.status_code == 403
        assert response.json() == {"detail": "API keys cannot manage users"}


class TestList:
    def test_200_lists_the_accounts_members(self, client, factory, admin, member):
        factory.user(factory.account("globex"))
        response = client.get("/v1/users", headers=factory.auth(member))
        assert response.status_code == 200
        assert [(m["username"], m["role"]) for m in response.json()["items"]] == [
            ("ada", "admin"),
            ("max", "member"),
        ]

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/users").status_code == 401

    def test_403_for_another_account_in_x_account_id(self, client, factory, admin):
        globex = factory.account("globex")
        response = client.get(
            "/v1/users", headers={**factory.auth(admin), "x-account-id": str(globex.id)}
        )
        assert response.status_code == 403

    def test_422_for_an_unknown_query_parameter(self, client, factory, admin):
        response = client.get("/v1/users", params={"role": "admin"}, headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "role"]


class TestCreate:
    def test_201_adds_a_user_who_can_log_in(self, client, factory, acme, admin):
        response = client.post(
            "/v1/users",
            json={"username": "newbie", "password": "a-long-password", "role": "member"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201
        assert response.json()["username"] == "newbie"
        assert response.json()["role"] == "member"
        token = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": "newbie", "password": "a-long-password"},
        ).json()["access_token"]
        me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["accounts"] == [{"id": acme.id, "name": "acme", "role": "member"}]

    def test_401_without_a_credential(self, client):
        response = client.post("/v1/users", json={"username": "x", "password": PASSWORD})
        assert response.status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        response = client.post(
            "/v1/users",
            json={"username": "sneaky", "password": PASSWORD, "role": "admin"},
            headers=factory.auth(member),
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "Only account admins can do this"}
        login = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": "sneaky", "password": PASSWORD},
        )
        assert login.status_code == 400

    def test_409_for_a_taken_username(self, client, factory, admin, member):
        response = client.post(
            "/v1/users", json={"username": "max", "password": PASSWORD}, headers=factory.auth(admin)
        )
        assert response.status_code == 409
        assert response.json() == {"detail": "Username already taken"}

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.post(
            "/v1/users", data={"username": "x", "password": PASSWORD}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_422_for_a_short_password_and_a_bad_role(self, client, factory, admin):
        response = client.post(
            "/v1/users",
            json={"username": "shorty", "password": "short", "role": "owner"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
            (["body", "password"], "string_too_short"),
            (["body", "role"], "enum"),
        ]
