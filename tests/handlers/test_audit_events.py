"""``GET /v1/audit-events``: every change and login, with actor and fields, never a secret."""

from __future__ import annotations

import json

import pytest

from keyplane.db.models import Role
from tests.factories import PASSWORD


@pytest.fixture
def acme(factory):
    return factory.account("acme")


@pytest.fixture
def admin(factory, acme):
    return factory.user(acme, Role.ADMIN, username="auditor")


def _events(client, factory, admin, **params):
    response = client.get("/v1/audit-events", params=params, headers=factory.auth(admin))
    assert response.status_code == 200
    return response.json()["items"]


class TestList:
    def test_200_records_every_change_with_actor_target_and_fields(
        self, client, factory, acme, admin
    ):
        auth = factory.auth(admin)
        secrets = [PASSWORD, "new-member-password"]
        created = client.post("/v1/api-keys", json={"description": "audited"}, headers=auth).json()
        secrets.append(created["full_key"])
        key_id = created["id"]
        client.patch(
            f"/v1/api-keys/{key_id}",
            json={"description": "renamed", "permissions": ["readApplications"]},
            headers=auth,
        )
        rotated = client.post(f"/v1/api-keys/{key_id}/rotate", json={}, headers=auth).json()
        secrets.append(rotated["full_key"])
        client.delete(f"/v1/api-keys/{key_id}", headers=auth)
        client.post(
            "/v1/users",
            json={"username": "newbie", "password": "new-member-password"},
            headers=auth,
        )
        client.post("/v1/permissions", json={"id": "readBilling"}, headers=auth)
        client.delete("/v1/permissions/readBilling", headers=auth)
        for password in (PASSWORD, "wrong-password"):
            client.post(
                "/v1/auth/token",
                data={"grant_type": "password", "username": "auditor", "password": password},
            )
        secrets.append("wrong-password")

        events = _events(client, factory, admin, limit=200)
        assert [e["action"] for e in events] == [
            "login.failed",
            "login.succeeded",
            "permission.removed",
            "permission.added",
            "user.added",
            "key.revoked",
            "key.rotated",
            "key.updated",
            "key.created",
            "user.added",  # the admin, by the factory
        ]
        by_action = {e["action"]: e for e in events}
        update = by_action["key.updated"]
        assert update["actor"] == {"type": "user", "id": admin.id, "address": "testclient"}
        assert update["target"] == {"type": "api_key", "id": str(key_id)}
        assert update["account_id"] == acme.id
        assert update["changes"] == {
            "description": {"from": "audited", "to": "renamed"},
            "permissions": {"from": [], "to": ["readApplications"]},
        }
        assert by_action["login.failed"]["target"] == {"type": "user", "id": str(admin.id)}
        dump = json.dumps(events)
        for secret in secrets:
            assert secret not in dump

    def test_200_filters_by_action_actor_and_key(self, client, factory, acme, admin):
        other = factory.user(acme, Role.ADMIN)
        first, _ = factory.api_key(admin, acme)
        second, _ = factory.api_key(other, acme)
        for key, user in ((first, admin), (second, other)):
            client.patch(
                f"/v1/api-keys/{key.id}", json={"description": "x"}, headers=factory.auth(user)
            )
        updated = _events(client, factory, admin, action="key.updated")
        assert {e["target"]["id"] for e in updated} == {str(first.id), str(second.id)}
        mine = _events(client, factory, admin, actor=f"user:{admin.id}", action="key.updated")
        assert [e["target"]["id"] for e in mine] == [str(first.id)]
        about_second = _events(client, factory, admin, key_id=second.id)
        assert [e["action"] for e in about_second] == ["key.updated", "key.created"]

    def test_200_pages_with_a_cursor(self, client, factory, acme, admin):
        for _ in range(3):
            factory.api_key(admin, acme)
        auth = factory.auth(admin)
        first = client.get("/v1/audit-events", params={"limit": 2}, headers=auth).json()
        second = client.get(
            "/v1/audit-events", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth
        ).json()
        assert len(first["items"]) == 2
        assert first["items"][-1]["id"] > second["items"][0]["id"]

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/audit-events").status_code == 401

    def test_403_for_a_member_and_an_api_key(self, client, factory, acme, admin):
        member = factory.user(acme, Role.MEMBER)
        _, full_key = factory.api_key(admin, acme)
        assert client.get("/v1/audit-events", headers=factory.auth(member)).status_code == 403
        assert client.get("/v1/audit-events", headers={"X-API-Key": full_key}).status_code == 403

    def test_422_for_a_malformed_actor(self, client, factory, admin):
        response = client.get(
            "/v1/audit-events", params={"actor": "robot:1"}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "actor"]
