"""``/v1/api-keys``: one class per operation, one test per documented status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyplane.db import crypto
from keyplane.db.engine import for_writing
from keyplane.db.models import ApiKey, Role
from keyplane.db.timefmt import rfc3339

SEED_002_FIELDS = {
    "id",
    "key_prefix",
    "user_id",
    "status",
    "created_at",
    "expires_at",
    "description",
    "full_key",
}
DETAIL_FIELDS = SEED_002_FIELDS | {
    "permissions",
    "last_used_at",
    "external_id",
    "meta",
    "enabled",
    "disabled_by",
    "credits",
    "ratelimits",
}


@pytest.fixture
def key(factory, admin, acme):
    return factory.api_key(admin, acme, description="ci deploys")


def _key_principal_headers(full_key: str) -> list[dict[str, str]]:
    return [{"X-API-Key": full_key}, {"Authorization": f"Bearer {full_key}"}]


class TestCreate:
    def test_201_returns_the_full_key_once_and_stores_only_its_digest(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys",
            json={"description": "billing", "expires_at": "2031-05-01T12:00:00+02:00"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201
        body = response.json()
        assert set(body) == DETAIL_FIELDS
        assert crypto.is_well_formed_api_key(body["full_key"])
        assert body["full_key"].startswith(body["key_prefix"])
        assert body | {"id": 0, "created_at": "", "full_key": "", "key_prefix": ""} == {
            "id": 0,
            "key_prefix": "",
            "user_id": admin.id,
            "status": "active",
            "created_at": "",
            "expires_at": "2031-05-01T10:00:00Z",
            "description": "billing",
            "full_key": "",
            "permissions": [],
            "last_used_at": None,
            "external_id": None,
            "meta": None,
            "enabled": True,
            "disabled_by": None,
            "credits": None,
            "ratelimits": [],
        }
        stored = factory.stored_key(body["id"])
        assert stored.key_digest == factory.secrets.api_key_digest(body["full_key"])
        assert body["full_key"] not in {stored.key_digest, stored.key_prefix, stored.description}
        again = client.get(f"/v1/api-keys/{body['id']}", headers=factory.auth(admin))
        assert again.json()["full_key"] is None

    def test_201_with_an_empty_body_creates_a_key_that_never_expires(self, client, factory, member):
        response = client.post("/v1/api-keys", json={}, headers=factory.auth(member))
        assert response.status_code == 201
        assert response.json()["expires_at"] is None
        assert response.json()["description"] is None
        assert response.json()["user_id"] == member.id

    def test_201_an_admin_creates_a_key_owned_by_a_member(self, client, factory, admin, member):
        expires = "2031-01-01T00:00:00Z"
        response = client.post(
            "/v1/api-keys",
            json={"description": "for the member", "user_id": member.id, "expires_at": expires},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["user_id"] == member.id
        mine = client.get("/v1/api-keys", headers=factory.auth(member)).json()["items"]
        assert [key["id"] for key in mine] == [created["id"]]
        # The admin's expiry binds the owner, who may only bring it forward.
        later = client.patch(
            f"/v1/api-keys/{created['id']}",
            json={"expires_at": "2032-01-01T00:00:00Z"},
            headers=factory.auth(member),
        )
        assert later.status_code == 403
        [event] = client.get(
            "/v1/audit-events",
            params={"action": "key.created", "key_id": created["id"]},
            headers=factory.auth(admin),
        ).json()["items"]
        assert (event["actor"]["type"], event["actor"]["id"]) == ("user", admin.id)
        assert event["changes"]["user_id"] == member.id

    def test_403_for_a_member_naming_another_owner(self, client, factory, admin, member):
        before = factory.count_keys()
        response = client.post(
            "/v1/api-keys", json={"user_id": admin.id}, headers=factory.auth(member)
        )
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "Only account admins create keys for another member"},
        )
        assert factory.count_keys() == before
        # Naming oneself is the same as naming no one.
        own = client.post("/v1/api-keys", json={"user_id": member.id}, headers=factory.auth(member))
        assert (own.status_code, own.json()["user_id"]) == (201, member.id)

    def test_422_for_an_owner_who_is_no_active_member(self, client, factory, acme, admin):
        outsider = factory.user(factory.account("globex"), Role.ADMIN)
        before = factory.count_keys()
        for user_id in (outsider.id, 999_999):
            response = client.post(
                "/v1/api-keys", json={"user_id": user_id}, headers=factory.auth(admin)
            )
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", "user_id"]
        assert factory.count_keys() == before

    def test_403_when_the_account_policy_refuses_the_owners_key(
        self, client, factory, admin, member
    ):
        client.put(
            "/v1/account/policy", json={"expiry_required": True}, headers=factory.auth(admin)
        )
        before = factory.count_keys()
        response = client.post(
            "/v1/api-keys", json={"user_id": member.id}, headers=factory.auth(admin)
        )
        assert response.status_code == 403
        assert "requires keys to expire" in response.json()["detail"]
        assert factory.count_keys() == before

    def test_401_without_a_credential(self, client, factory):
        before = factory.count_keys()
        response = client.post("/v1/api-keys", json={})
        assert response.status_code == 401
        assert response.json() == {"detail": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert factory.count_keys() == before

    def test_403_for_an_api_key_principal(self, client, factory, key):
        _, full_key = key
        before = factory.count_keys()
        for headers in _key_principal_headers(full_key):
            response = client.post("/v1/api-keys", json={}, headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot create API keys"}
        assert factory.count_keys() == before

    def test_415_for_a_body_that_is_not_json(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys",
            content=b"description=x",
            headers={**factory.auth(admin), "Content-Type": "text/plain"},
        )
        assert response.status_code == 415
        assert response.json() == {"detail": "Unsupported Media Type"}

    def test_422_lists_every_invalid_field(self, client, factory, admin):
        before = factory.count_keys()
        response = client.post(
            "/v1/api-keys",
            json={"description": 5, "expires_at": "tomorrow"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        # FastAPI's order: the fields as the schema declares them (the v1 contract).
        assert [e["loc"] for e in response.json()["detail"]] == [
            ["body", "expires_at"],
            ["body", "description"],
        ]
        assert factory.count_keys() == before

    def test_201_with_a_past_expiry_answers_status_expired(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys", json={"expires_at": "2001-01-01T00:00:00Z"}, headers=factory.auth(admin)
        )
        assert response.status_code == 201
        assert response.json()["status"] == "expired"
        assert (
            client.get("/v1/users", headers={"X-API-Key": response.json()["full_key"]}).status_code
            == 401
        )

    def test_201_with_catalog_permissions(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys",
            json={"permissions": ["writeApplications", "readApplications", "readApplications"]},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201
        assert response.json()["permissions"] == ["readApplications", "writeApplications"]
        assert factory.stored_key(response.json()["id"]).permissions == [
            "readApplications",
            "writeApplications",
        ]

    def test_422_for_a_permission_outside_the_catalog(self, client, factory, admin):
        before = factory.count_keys()
        response = client.post(
            "/v1/api-keys",
            json={"permissions": ["readApplications", "launchMissiles"]},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {
                    "loc": ["body", "permissions", 1],
                    "msg": "Permission is not in the account's catalog",
                    "type": "value_error",
                }
            ]
        }
        assert factory.count_keys() == before


class TestList:
    def test_200_admin_sees_every_key_of_the_account_newest_first(
        self, client, factory, acme, admin, member
    ):
        first, _ = factory.api_key(admin, acme)
        second, _ = factory.api_key(member, acme)
        other_account = factory.account("globex")
        factory.api_key(factory.user(other_account), other_account)
        response = client.get("/v1/api-keys", headers=factory.auth(admin))
        assert response.status_code == 200
        assert [k["id"] for k in response.json()["items"]] == [second.id, first.id]
        assert all(k["full_key"] is None for k in response.json()["items"])
        assert response.json()["next_cursor"] is None

    def test_200_each_key_as_its_own_get_shows_it(self, client, factory, admin):
        """The page reads keys in one query of plain rows; each is shown exactly as the
        key's own GET shows it: permissions and rate limits in order (by code point,
        whatever the database's collation), booleans, meta."""
        auth = factory.auth(admin)
        for catalog_id in ("admin", "Billing", "read:keys", "read.keys"):
            made = client.post("/v1/permissions", json={"id": catalog_id}, headers=auth)
            assert made.status_code == 201, made.text
        bodies = [
            {},
            {
                "description": "full",
                "permissions": ["writeApplications", "read:keys", "admin", "Billing", "read.keys"],
                "ratelimits": [
                    {"name": "tokens", "limit": 5, "duration_ms": 1000, "auto_apply": False},
                    {"name": "requests", "limit": 10, "duration_ms": 60000, "auto_apply": True},
                ],
                "credits": {"remaining": 9, "refill": {"interval": "daily", "amount": 9}},
                "meta": {"plan": "pro", "seats": 3, "trial": False, "tags": ["a"]},
                "external_id": "cus_1",
                "expires_at": "2099-01-01T00:00:00Z",
            },
            {"enabled": False, "permissions": ["readApplications"]},
        ]
        ids = []
        for body in bodies:
            made = client.post("/v1/api-keys", json=body, headers=auth)
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
        listed = client.get("/v1/api-keys", headers=auth).json()["items"]
        each = [client.get(f"/v1/api-keys/{key_id}", headers=auth).json() for key_id in ids]
        assert listed == each[::-1]
        assert listed[1]["ratelimits"][0] == {
            "name": "requests",
            "limit": 10,
            "duration_ms": 60000,
            "auto_apply": True,
        }
        assert listed[1]["permissions"] == [
            "Billing",
            "admin",
            "read.keys",
            "read:keys",
            "writeApplications",
        ]
        assert listed[2]["permissions"] == [] and listed[2]["ratelimits"] == []

    def test_200_member_sees_only_their_own_keys(self, client, factory, acme, admin, member):
        factory.api_key(admin, acme)
        own, _ = factory.api_key(member, acme)
        response = client.get("/v1/api-keys", headers=factory.auth(member))
        assert [k["id"] for k in response.json()["items"]] == [own.id]

    def test_200_pages_with_a_cursor(self, client, factory, acme, admin):
        ids = [factory.api_key(admin, acme)[0].id for _ in range(5)]
        seen, cursor = [], None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/api-keys", params=params, headers=factory.auth(admin)).json()
            assert len(page["items"]) <= 2
            seen += [k["id"] for k in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)

    def test_200_filters_by_status(self, client, factory, acme, admin):
        active, _ = factory.api_key(admin, acme)
        revoked, _ = factory.api_key(admin, acme)
        client.delete(f"/v1/api-keys/{revoked.id}", headers=factory.auth(admin))
        for status, expected in [
            ("active", [active.id]),
            ("revoked", [revoked.id]),
            ("expired", []),
        ]:
            page = client.get(
                "/v1/api-keys", params={"status": status}, headers=factory.auth(admin)
            ).json()
            assert [k["id"] for k in page["items"]] == expected

    def test_401_without_a_credential(self, client):
        response = client.get("/v1/api-keys")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_an_api_key_principal(self, client, key):
        for headers in _key_principal_headers(key[1]):
            response = client.get("/v1/api-keys", headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot list API keys"}

    def test_422_for_a_bad_limit_cursor_or_status(self, client, factory, admin):
        response = client.get(
            "/v1/api-keys",
            params={"limit": 0, "status": "gone"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        assert [e["loc"] for e in response.json()["detail"]] == [
            ["query", "status"],
            ["query", "limit"],
        ]
        response = client.get(
            "/v1/api-keys", params={"cursor": "12abc"}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


class TestGet:
    def test_200_answers_the_key_without_its_secret(self, client, factory, admin, key):
        record, _ = key
        response = client.get(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json()["description"] == "ci deploys"
        assert response.json()["status"] == "active"
        assert response.json()["full_key"] is None

    def test_401_with_an_invalid_token(self, client, key):
        response = client.get(
            f"/v1/api-keys/{key[0].id}", headers={"Authorization": "Bearer not-a-token"}
        )
        assert response.status_code == 401
        assert response.json() == {"detail": "Could not validate credentials"}
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_an_api_key_principal(self, client, key):
        for headers in _key_principal_headers(key[1]):
            response = client.get(f"/v1/api-keys/{key[0].id}", headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot read API keys"}

    def test_404_for_another_accounts_key_like_a_missing_one(self, client, factory, key):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        foreign = client.get(f"/v1/api-keys/{key[0].id}", headers=factory.auth(outsider))
        missing = client.get("/v1/api-keys/987654321", headers=factory.auth(outsider))
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json() == {"detail": "API key not found"}

    def test_404_for_a_member_asking_for_someone_elses_key(self, client, factory, member, key):
        response = client.get(f"/v1/api-keys/{key[0].id}", headers=factory.auth(member))
        assert response.status_code == 404

    def test_422_for_a_non_integer_id(self, client, factory, admin):
        response = client.get("/v1/api-keys/abc", headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "item_id"]
        assert response.json()["detail"][0]["type"] == "int_parsing"


def _updates(client, auth):
    """The changes of every ``key.updated`` audit event, newest first."""
    response = client.get("/v1/audit-events", params={"action": "key.updated"}, headers=auth)
    assert response.status_code == 200
    return [event["changes"] for event in response.json()["items"]]


class TestUpdate:
    """Seed 002: PATCH /v1/api-keys/{item_id}, body APIKeyRecordCreate, 200 APIKeyRecordRead."""

    def test_200_seed_request_exactly_as_documented(self, client, factory, admin, key):
        record, _ = key
        response = client.patch(
            f"/v1/api-keys/{record.id}",
            json={"expires_at": "2030-01-01T00:00:00Z", "description": "string"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body) == SEED_002_FIELDS
        assert body["expires_at"] == "2030-01-01T00:00:00Z"
        assert body["description"] == "string"
        assert body["full_key"] is None
        assert body["id"] == record.id
        assert body["key_prefix"] == record.key_prefix
        assert body["user_id"] == admin.id
        assert body["status"] == "active"
        assert datetime.fromisoformat(body["created_at"]) == record.created_at
        after = client.get(f"/v1/api-keys/{record.id}", headers=factory.auth(admin)).json()
        assert {field: after[field] for field in SEED_002_FIELDS} == body

    def test_200_omitted_field_is_unchanged_and_null_clears(self, client, factory, admin, key):
        record, _ = key
        url, auth = f"/v1/api-keys/{record.id}", factory.auth(admin)
        client.patch(url, json={"expires_at": "2030-01-01T00:00:00Z"}, headers=auth)
        only_description = client.patch(url, json={"description": "renamed"}, headers=auth).json()
        assert only_description["expires_at"] == "2030-01-01T00:00:00Z"
        cleared = client.patch(url, json={"expires_at": None, "description": None}, headers=auth)
        assert cleared.status_code == 200
        assert cleared.json()["expires_at"] is None
        assert cleared.json()["description"] is None
        assert factory.stored_key(record.id).expires_at is None

    def test_200_permissions_change_and_null_clears_them(self, client, factory, acme, admin):
        record, _ = factory.api_key(admin, acme, permissions=("readApplications",))
        url, auth = f"/v1/api-keys/{record.id}", factory.auth(admin)
        changed = client.patch(url, json={"permissions": ["writeApplications"]}, headers=auth)
        assert changed.status_code == 200
        assert "permissions" not in changed.json()  # the v1 contract's APIKeyRecordRead, exactly
        assert client.get(url, headers=auth).json()["permissions"] == ["writeApplications"]
        client.patch(url, json={"description": "kept"}, headers=auth)
        assert client.get(url, headers=auth).json()["permissions"] == ["writeApplications"]
        client.patch(url, json={"permissions": None}, headers=auth)
        assert client.get(url, headers=auth).json()["permissions"] == []

    def test_200_a_patch_that_changes_nothing_writes_nothing(self, client, factory, acme, admin):
        auth = factory.auth(admin)
        body = {
            "description": "billing",
            "expires_at": "2031-05-01T10:00:00Z",
            "permissions": ["readApplications", "writeApplications"],
            "external_id": "cus_42",
            "meta": {"plan": "pro", "seats": 1},
            "enabled": True,
        }
        created = client.post("/v1/api-keys", json=body, headers=auth).json()
        url = f"/v1/api-keys/{created['id']}"
        before = factory.stored_key(created["id"])
        same = body | {"permissions": ["writeApplications", "readApplications"]}
        response = client.patch(url, json=same, headers=auth)
        assert response.status_code == 200
        assert response.json() == {f: created[f] for f in SEED_002_FIELDS} | {"full_key": None}
        assert client.get(url, headers=auth).json() == created | {"full_key": None}
        assert factory.stored_key(created["id"]).updated_at == before.updated_at
        assert _updates(client, auth) == []
        # A change of JSON type is a change: 1 and true are equal in Python, not in JSON.
        client.patch(url, json={"meta": {"plan": "pro", "seats": True}}, headers=auth)
        assert _updates(client, auth) == [
            {"meta": {"from": body["meta"], "to": {"plan": "pro", "seats": True}}}
        ]
        # Compared as JSON: to Python, 1 == True, and so the stored 1 would pass for true.
        assert json.dumps(client.get(url, headers=auth).json()["meta"]) == (
            '{"plan": "pro", "seats": true}'
        )
        assert factory.stored_key(created["id"]).updated_at > before.updated_at

    def test_200_a_patch_that_changes_nothing_does_not_wait_on_a_writer(
        self, client, factory, admin, engine, key
    ):
        record, _ = key
        url, auth = f"/v1/api-keys/{record.id}", factory.auth(admin)
        # Another transaction holds the key's row lock (PostgreSQL) and the write lock
        # (SQLite) while the PATCH runs: one that changed something would wait its 5 s
        # for them and answer 503.
        with Session(for_writing(engine)) as writer, writer.begin():
            writer.execute(select(ApiKey).where(ApiKey.id == record.id).with_for_update())
            response = client.patch(url, json={"description": "ci deploys"}, headers=auth)
        assert response.status_code == 200
        assert response.json()["description"] == "ci deploys"

    def test_422_for_an_unknown_permission_changes_nothing(self, client, factory, acme, admin):
        record, _ = factory.api_key(admin, acme, permissions=("readApplications",))
        response = client.patch(
            f"/v1/api-keys/{record.id}",
            json={"description": "changed?", "permissions": ["nope"]},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "permissions", 0]
        stored = factory.stored_key(record.id)
        assert (stored.description, stored.permissions) == ("a key", ["readApplications"])

    def test_200_a_past_expiry_expires_the_key_now(self, client, factory, admin, key):
        record, full_key = key
        response = client.patch(
            f"/v1/api-keys/{record.id}",
            json={"expires_at": "2001-01-01T00:00:00Z"},
            headers=factory.auth(admin),
        )
        assert response.json()["status"] == "expired"
        assert client.get("/v1/api-keys", headers={"X-API-Key": full_key}).status_code == 401

    def test_401_without_a_credential(self, client, factory, key):
        response = client.patch(f"/v1/api-keys/{key[0].id}", json={"description": "x"})
        assert response.status_code == 401
        assert response.json() == {"detail": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert factory.stored_key(key[0].id).description == "ci deploys"

    def test_401_when_one_of_two_credentials_is_invalid(self, client, factory, admin, key):
        response = client.patch(
            f"/v1/api-keys/{key[0].id}",
            json={"description": "x"},
            headers={**factory.auth(admin), "X-API-Key": "kp_not_a_real_key"},
        )
        assert response.status_code == 401
        assert factory.stored_key(key[0].id).description == "ci deploys"

    def test_422_for_a_new_owner_a_keys_owner_never_changes(
        self, client, factory, admin, member, key
    ):
        record, _ = key
        for user_id in (member.id, admin.id):
            response = client.patch(
                f"/v1/api-keys/{record.id}",
                json={"description": "moved", "user_id": user_id},
                headers=factory.auth(admin),
            )
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", "user_id"]
        stored = factory.stored_key(record.id)
        assert (stored.user_id, stored.description) == (admin.id, "ci deploys")

    def test_403_for_an_api_key_as_x_api_key_or_bearer(self, client, factory, key):
        record, full_key = key
        for headers in _key_principal_headers(full_key):
            response = client.patch(
                f"/v1/api-keys/{record.id}", json={"description": "hijacked"}, headers=headers
            )
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot update API keys"}
        assert factory.stored_key(record.id).description == "ci deploys"

    def test_403_for_x_account_id_of_an_account_the_user_is_not_in(
        self, client, factory, admin, key
    ):
        globex = factory.account("globex")
        response = client.patch(
            f"/v1/api-keys/{key[0].id}",
            json={"description": "x"},
            headers={**factory.auth(admin), "x-account-id": str(globex.id)},
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "You are not a member of that account"}

    @pytest.mark.parametrize("item_id", ["0", "-3", "99999999"])
    def test_404_for_an_id_no_key_has_as_fastapi_answers_it(self, client, factory, admin, item_id):
        response = client.patch(
            f"/v1/api-keys/{item_id}", json={"description": "x"}, headers=factory.auth(admin)
        )
        assert (response.status_code, response.json()) == (404, {"detail": "API key not found"})

    @pytest.mark.parametrize("written", ["{id}.0", "0{id}", "%20{id}"])
    def test_200_for_an_id_written_as_pydantic_reads_an_integer(
        self, client, factory, admin, key, written
    ):
        path = f"/v1/api-keys/{written.format(id=key[0].id)}"
        response = client.patch(path, json={"description": "x"}, headers=factory.auth(admin))
        assert (response.status_code, response.json()["id"]) == (200, key[0].id)

    def test_404_for_another_accounts_key(self, client, factory, key):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        response = client.patch(
            f"/v1/api-keys/{key[0].id}", json={"description": "x"}, headers=factory.auth(outsider)
        )
        assert response.status_code == 404
        assert response.json() == {"detail": "API key not found"}
        assert factory.stored_key(key[0].id).description == "ci deploys"

    def test_415_for_a_form_body(self, client, factory, admin, key):
        response = client.patch(
            f"/v1/api-keys/{key[0].id}", data={"description": "x"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (
                {"expires_at": "not-a-date"},
                {
                    "type": "datetime_from_date_parsing",
                    "loc": ["body", "expires_at"],
                    "msg": "Input should be a valid datetime or date, invalid character in year",
                    "input": "not-a-date",
                    "ctx": {"error": "invalid character in year"},
                },
            ),
            (
                {"expires_at": "2030-13-01T00:00:00"},
                {
                    "type": "datetime_from_date_parsing",
                    "loc": ["body", "expires_at"],
                    "msg": "Input should be a valid datetime or date, month value is outside"
                    " expected range of 1-12",
                    "input": "2030-13-01T00:00:00",
                    "ctx": {"error": "month value is outside expected range of 1-12"},
                },
            ),
            (
                {"expires_at": [1]},
                {
                    "type": "datetime_type",
                    "loc": ["body", "expires_at"],
                    "msg": "Input should be a valid datetime",
                    "input": [1],
                },
            ),
            (
                {"description": 5},
                {
                    "type": "string_type",
                    "loc": ["body", "description"],
                    "msg": "Input should be a valid string",
                    "input": 5,
                },
            ),
        ],
    )
    def test_422_for_an_invalid_body_as_fastapi_answers_it(
        self, client, factory, admin, key, body, error
    ):
        response = client.patch(f"/v1/api-keys/{key[0].id}", json=body, headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json() == {"detail": [error]}
        assert factory.stored_key(key[0].id).description == "ci deploys"

    def test_422_lists_the_path_and_the_body_errors_at_once(self, client, factory, admin):
        response = client.patch(
            "/v1/api-keys/abc", json={"description": 5}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
            (["path", "item_id"], "int_parsing"),
            (["body", "description"], "string_type"),
        ]

    def test_401_before_the_path_is_judged_and_422_for_json_before_the_credential(self, client):
        unauthenticated = client.patch("/v1/api-keys/abc", json={"description": 5})
        assert (unauthenticated.status_code, unauthenticated.json()) == (
            401,
            {"detail": "Not authenticated"},
        )
        malformed = client.patch(
            "/v1/api-keys/1", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 422
        assert malformed.json()["detail"][0]["type"] == "json_invalid"

    @pytest.mark.parametrize(
        ("sent", "stored"),
        [
            ("2031-01-01T00:00:00Z", "2031-01-01T00:00:00Z"),
            ("2031-01-01T02:00:00+02:00", "2031-01-01T00:00:00Z"),
            ("2031-01-01T00:00:00", "2031-01-01T00:00:00Z"),  # no offset: UTC
            ("2031-01-01", "2031-01-01T00:00:00Z"),
            ("2031-01-01 10:30", "2031-01-01T10:30:00Z"),
            (1924992000, "2031-01-01T00:00:00Z"),  # seconds since 1970
            ("1924992000", "2031-01-01T00:00:00Z"),
        ],
    )
    def test_200_reads_every_date_time_pydantic_reads(
        self, client, factory, admin, key, sent, stored
    ):
        response = client.patch(
            f"/v1/api-keys/{key[0].id}", json={"expires_at": sent}, headers=factory.auth(admin)
        )
        assert (response.status_code, response.json()["expires_at"]) == (200, stored)
        got = client.get(f"/v1/api-keys/{key[0].id}", headers=factory.auth(admin)).json()
        assert got["expires_at"] == stored

    @pytest.mark.parametrize(
        ("item_id", "error_type"),
        [
            ("abc", "int_parsing"),
            ("1.5", "int_parsing"),
            ("9223372036854775808", "less_than_equal"),
        ],
    )
    def test_422_for_a_non_integer_or_out_of_range_id(
        self, client, factory, admin, item_id, error_type
    ):
        response = client.patch(
            f"/v1/api-keys/{item_id}", json={"description": "x"}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["path", "item_id"]
        assert error["type"] == error_type

    def test_409_turning_on_a_key_of_an_owner_who_left(
        self, client, factory, admin, member, acme, verifier
    ):
        record, full_key = factory.api_key(member, acme)
        client.delete(f"/v1/users/{member.id}", headers=factory.auth(admin))
        response = client.patch(
            f"/v1/api-keys/{record.id}", json={"enabled": True}, headers=factory.auth(admin)
        )
        assert response.status_code == 409
        assert response.json() == {
            "detail": "The key's owner is no longer an active member of this account"
        }
        assert (
            client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()["code"]
            == "DISABLED"
        )


class TestRevoke:
    def test_200_revokes_irreversibly(self, client, factory, admin, key):
        record, full_key = key
        assert client.get("/v1/users", headers={"X-API-Key": full_key}).status_code == 403
        response = client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert response.status_code == 200
        assert response.json()["status"] == "revoked"
        assert factory.stored_key(record.id).revoked_at is not None
        # The revoked key no longer authenticates at all.
        assert client.get("/v1/users", headers={"X-API-Key": full_key}).status_code == 401
        # Revoking again changes nothing; a later expiry change does not bring it back.
        assert (
            client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin)).json()["status"]
            == "revoked"
        )
        future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        patched = client.patch(
            f"/v1/api-keys/{record.id}", json={"expires_at": future}, headers=factory.auth(admin)
        )
        assert patched.json()["status"] == "revoked"

    def test_200_a_member_revokes_their_own_key(self, client, factory, acme, member):
        record, _ = factory.api_key(member, acme)
        response = client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(member))
        assert response.status_code == 200

    def test_401_without_a_credential(self, client, factory, key):
        assert client.delete(f"/v1/api-keys/{key[0].id}").status_code == 401
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_403_for_an_api_key_principal_even_on_itself(self, client, factory, key):
        for headers in _key_principal_headers(key[1]):
            response = client.delete(f"/v1/api-keys/{key[0].id}", headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot revoke API keys"}
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_404_for_a_member_revoking_someone_elses_key(self, client, factory, member, key):
        response = client.delete(f"/v1/api-keys/{key[0].id}", headers=factory.auth(member))
        assert response.status_code == 404
        assert factory.stored_key(key[0].id).revoked_at is None

    def test_422_for_a_non_integer_id(self, client, factory, admin):
        response = client.delete("/v1/api-keys/xyz", headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "item_id"]


class TestAccountSelection:
    def test_x_account_id_selects_the_account(self, client, factory, admin, acme):
        globex = factory.account("globex")
        factory.join(admin, globex, Role.MEMBER)
        created = client.post(
            "/v1/api-keys", json={}, headers={**factory.auth(admin), "x-account-id": str(globex.id)}
        ).json()
        in_acme = client.get("/v1/api-keys", headers=factory.auth(admin)).json()["items"]
        in_globex = client.get(
            "/v1/api-keys", headers={**factory.auth(admin), "x-account-id": str(globex.id)}
        ).json()["items"]
        assert created["id"] not in [k["id"] for k in in_acme]
        assert [k["id"] for k in in_globex] == [created["id"]]
        assert factory.stored_key(created["id"]).account_id == globex.id

    def test_403_for_a_user_in_no_account(self, client, factory):
        loner = factory.user()
        response = client.get("/v1/api-keys", headers=factory.auth(loner))
        assert response.status_code == 403
        assert response.json() == {"detail": "You are not a member of any account"}


class TestRotate:
    def _rotate(self, client, factory, user, key_id, grace=None):
        body = {} if grace is None else {"grace_period_seconds": grace}
        return client.post(f"/v1/api-keys/{key_id}/rotate", json=body, headers=factory.auth(user))

    def _verify(self, client, verifier, full_key):
        return client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()

    def test_200_a_new_secret_for_the_same_record_old_one_kept_for_the_grace(
        self, client, factory, sessions, acme, admin, verifier
    ):
        record, old_key = factory.api_key(
            admin, acme, description="rotating", permissions=("readApplications",)
        )
        response = self._rotate(client, factory, admin, record.id, grace=3600)
        assert response.status_code == 200
        body = response.json()
        new_key = body["full_key"]
        assert new_key != old_key and new_key.startswith(body["key_prefix"])
        assert (body["id"], body["description"], body["permissions"]) == (
            record.id,
            "rotating",
            ["readApplications"],
        )
        assert self._verify(client, verifier, new_key)["code"] == "VALID"
        assert self._verify(client, verifier, new_key)["rotation"] is None
        during = self._verify(client, verifier, old_key)
        assert during["code"] == "VALID"
        assert during["rotation"]["replaced"] is True
        grace_end = datetime.fromisoformat(during["rotation"]["expires_at"])
        assert timedelta(minutes=59) < grace_end - datetime.now(UTC) <= timedelta(hours=1)
        # The grace period ends: the old secret is gone, the new one stays.
        with sessions() as session, session.begin():
            stored = session.get(ApiKey, record.id)
            stored.previous_key_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        assert self._verify(client, verifier, old_key)["code"] == "NOT_FOUND"
        assert self._verify(client, verifier, new_key)["code"] == "VALID"

    def test_200_grace_zero_cuts_the_old_secret_at_once(
        self, client, factory, acme, member, verifier
    ):
        record, old_key = factory.api_key(member, acme)
        response = self._rotate(client, factory, member, record.id, grace=0)
        assert response.status_code == 200
        assert self._verify(client, verifier, old_key)["code"] == "NOT_FOUND"
        assert self._verify(client, verifier, response.json()["full_key"])["code"] == "VALID"

    def test_200_rotating_again_cuts_the_oldest_secret(
        self, client, factory, acme, admin, verifier
    ):
        record, first = factory.api_key(admin, acme)
        second = self._rotate(client, factory, admin, record.id, grace=600).json()["full_key"]
        third = self._rotate(client, factory, admin, record.id, grace=600).json()["full_key"]
        assert self._verify(client, verifier, first)["code"] == "NOT_FOUND"
        assert self._verify(client, verifier, second)["rotation"]["replaced"] is True
        assert self._verify(client, verifier, third)["code"] == "VALID"

    def test_401_without_a_credential(self, client, key):
        response = client.post(f"/v1/api-keys/{key[0].id}/rotate", json={})
        assert response.status_code == 401

    def test_403_for_an_api_key_principal_even_on_itself(self, client, factory, key, verifier):
        for headers in _key_principal_headers(key[1]):
            response = client.post(f"/v1/api-keys/{key[0].id}/rotate", json={}, headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": "API keys cannot rotate API keys"}
        assert self._verify(client, verifier, key[1])["code"] == "VALID"

    def test_404_for_a_member_rotating_someone_elses_key(
        self, client, factory, member, key, verifier
    ):
        assert self._rotate(client, factory, member, key[0].id).status_code == 404
        assert self._verify(client, verifier, key[1])["code"] == "VALID"

    def test_409_for_a_revoked_key(self, client, factory, admin, key):
        client.delete(f"/v1/api-keys/{key[0].id}", headers=factory.auth(admin))
        response = self._rotate(client, factory, admin, key[0].id)
        assert response.status_code == 409
        assert response.json() == {"detail": "A revoked key cannot be rotated"}

    def test_409_for_an_expired_key(self, client, factory, acme, admin):
        expired, _ = factory.api_key(admin, acme, expires_at=datetime.now(UTC) - timedelta(1))
        response = self._rotate(client, factory, admin, expired.id)
        assert response.status_code == 409
        assert response.json() == {"detail": "An expired key cannot be rotated"}

    def test_415_for_a_form_body(self, client, factory, admin, key):
        response = client.post(
            f"/v1/api-keys/{key[0].id}/rotate",
            data={"grace_period_seconds": "5"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 415

    def test_422_for_a_grace_period_over_seven_days(self, client, factory, admin, key, verifier):
        response = self._rotate(client, factory, admin, key[0].id, grace=604801)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "grace_period_seconds"]
        assert self._verify(client, verifier, key[1])["code"] == "VALID"


class TestAPatchOfPlainFields:
    """``description`` and ``external_id`` alone: the key locked, changed and audited by
    one statement (PostgreSQL) or two in a row (SQLite); the same answer, the same
    stored key and the same audit event as any other PATCH."""

    def test_200_changed_and_audited_once_from_the_old_to_the_new_values(
        self, client, factory, admin, key
    ):
        record, _ = key
        url, auth = f"/v1/api-keys/{record.id}", factory.auth(admin)
        first = client.patch(url, json={"external_id": "cus_1"}, headers=auth)
        body = {"external_id": "cus_2", "description": "renamed"}
        response = client.patch(url, json=body, headers=auth)
        assert response.status_code == 200
        shown = response.json()
        assert shown["description"] == "renamed"
        assert set(shown) == SEED_002_FIELDS
        assert {f: shown[f] for f in SEED_002_FIELDS} == {
            f: client.get(url, headers=auth).json()[f] for f in SEED_002_FIELDS
        }
        stored = factory.stored_key(record.id)
        assert (stored.description, stored.external_id) == ("renamed", "cus_2")
        assert first.status_code == 200 and stored.updated_at > record.updated_at
        events = client.get(
            "/v1/audit-events",
            params={"action": "key.updated", "key_id": record.id},
            headers=auth,
        ).json()["items"]
        assert len(events) == 2
        assert events[0]["actor"] == {"type": "user", "id": admin.id, "address": "testclient"}
        assert events[0]["target"] == {"type": "api_key", "id": str(record.id)}
        assert events[0]["time"] == rfc3339(stored.updated_at)
        # In the audit's field order, whatever the body's: as every other PATCH records.
        assert list(events[0]["changes"].items()) == [
            ("description", {"from": record.description, "to": "renamed"}),
            ("external_id", {"from": "cus_1", "to": "cus_2"}),
        ]
        assert events[1]["changes"] == {"external_id": {"from": None, "to": "cus_1"}}

    def test_the_key_is_locked_changed_and_audited_by_one_statement(
        self, client, factory, admin, key, statements, db_kind
    ):
        record, _ = key
        statements.clear()
        response = client.patch(
            f"/v1/api-keys/{record.id}", json={"description": "one"}, headers=factory.auth(admin)
        )
        assert response.status_code == 200
        writes = [s for s in statements if "UPDATE api_keys" in s or "INSERT INTO audit" in s]
        if db_kind == "postgresql":
            # The lock, the caller's standing, the change and its audit event, together.
            [statement] = writes
            assert statements[-1] == statement
            assert "FOR UPDATE" in statement and "FOR SHARE" in statement
            assert "INSERT INTO audit_events" in statement
        else:
            # Inside SQLite's write transaction: the event written if the key is as
            # judged (the caller's standing too), then the key changed; nothing after.
            [audited, changed] = writes
            assert statements[-2:] == writes
            assert audited.startswith("INSERT INTO audit_events") and "memberships" in audited
            assert changed.startswith("UPDATE api_keys") and "RETURNING" in changed
        assert factory.stored_key(record.id).description == "one"

    def test_a_body_with_any_other_field_is_judged_on_the_locked_row(
        self, client, factory, admin, key, statements
    ):
        """``enabled`` sent as it already is: the description alone changes, but the
        switch is judged where another writer could have turned it meanwhile."""
        record, _ = key
        statements.clear()
        body = {"description": "two", "enabled": True}
        response = client.patch(f"/v1/api-keys/{record.id}", json=body, headers=factory.auth(admin))
        assert response.status_code == 200
        audited = [s for s in statements if s.startswith("INSERT INTO audit_events")]
        assert len(audited) == 1 and "memberships" not in audited[0]  # the full path's
        assert factory.stored_key(record.id).description == "two"

    def test_403_and_nothing_written_when_the_key_is_outside_the_policy(
        self, client, factory, admin, key
    ):
        record, _ = key
        auth = factory.auth(admin)
        policy = {"expiry_required": True}
        assert client.put("/v1/account/policy", json=policy, headers=auth).status_code == 200
        refused = client.patch(
            f"/v1/api-keys/{record.id}", json={"description": "new"}, headers=auth
        )
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "This account's policy requires keys to expire: set an expires_at"
        )
        stored = factory.stored_key(record.id)
        assert (stored.description, stored.updated_at) == (record.description, record.updated_at)
        assert _updates(client, auth) == []

    def test_an_account_with_a_webhook_hears_of_the_change(self, client, factory, admin, key):
        record, _ = key
        auth = factory.auth(admin)
        hook = {"url": "https://hooks.example.com/keyplane", "event_types": ["key.updated"]}
        made = client.post("/v1/webhooks", json=hook, headers=auth)
        assert made.status_code == 201
        client.patch(f"/v1/api-keys/{record.id}", json={"description": "heard"}, headers=auth)
        deliveries = client.get(
            f"/v1/webhooks/{made.json()['id']}/deliveries", headers=auth
        ).json()["items"]
        assert [d["event_type"] for d in deliveries] == ["key.updated"]
        assert _updates(client, auth) == [
            {"description": {"from": record.description, "to": "heard"}}
        ]


class TestCustomerFields:
    """``external_id``, ``meta`` and ``enabled``: set at create and update, shown by GET,
    listed by ``external_id``, told by a VALID verify."""

    def test_201_and_verify_carry_the_customers_fields(
        self, client, factory, admin, acme, verifier
    ):
        body = {"external_id": "cus_4f2a", "meta": {"plan": "pro", "seats": 5, "tags": ["eu"]}}
        made = client.post("/v1/api-keys", json=body, headers=factory.auth(admin))
        assert made.status_code == 201
        assert {f: made.json()[f] for f in ("external_id", "meta", "enabled")} == body | {
            "enabled": True
        }
        verdict = client.post(
            "/v1/keys/verify",
            json={"key": made.json()["full_key"], "account_id": acme.id},
            headers=verifier,
        ).json()
        assert (verdict["code"], verdict["external_id"], verdict["meta"]) == (
            "VALID",
            "cus_4f2a",
            body["meta"],
        )

    def test_200_lists_by_external_id_and_status(self, client, factory, admin):
        for external_id in ("cus_a", "cus_b", "cus_a"):
            client.post(
                "/v1/api-keys", json={"external_id": external_id}, headers=factory.auth(admin)
            )
        listed = client.get(
            "/v1/api-keys", params={"external_id": "cus_a"}, headers=factory.auth(admin)
        ).json()["items"]
        assert [k["external_id"] for k in listed] == ["cus_a", "cus_a"]
        client.patch(
            f"/v1/api-keys/{listed[0]['id']}", json={"enabled": False}, headers=factory.auth(admin)
        )
        disabled = client.get(
            "/v1/api-keys", params={"status": "disabled"}, headers=factory.auth(admin)
        ).json()["items"]
        active = client.get(
            "/v1/api-keys", params={"status": "active"}, headers=factory.auth(admin)
        ).json()["items"]
        assert [k["id"] for k in disabled] == [listed[0]["id"]]
        assert listed[0]["id"] not in [k["id"] for k in active]
        assert len(active) == 2

    def test_200_enabled_is_a_reversible_switch(self, client, factory, admin, key, verifier):
        record, full_key = key
        off = client.patch(
            f"/v1/api-keys/{record.id}", json={"enabled": False}, headers=factory.auth(admin)
        )
        assert (off.status_code, off.json()["status"]) == (200, "disabled")
        verdict = client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()
        assert (verdict["valid"], verdict["code"], verdict["key_id"]) == (False, "DISABLED", None)
        # A disabled key is no credential either.
        assert client.get("/v1/users/me", headers={"X-API-Key": full_key}).status_code == 401
        console = client.get(f"/apikeys/{record.id}", headers=factory.auth(admin)).json()
        assert console["status"] == "disabled"
        on = client.patch(
            f"/v1/api-keys/{record.id}", json={"enabled": True}, headers=factory.auth(admin)
        )
        assert (on.status_code, on.json()["status"]) == (200, "active")
        assert (
            client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()["code"]
            == "VALID"
        )

    def test_200_null_clears_external_id_and_meta(self, client, factory, admin):
        made = client.post(
            "/v1/api-keys",
            json={"external_id": "cus_a", "meta": {"a": 1}},
            headers=factory.auth(admin),
        ).json()
        client.patch(
            f"/v1/api-keys/{made['id']}",
            json={"external_id": None, "meta": None},
            headers=factory.auth(admin),
        )
        stored = client.get(f"/v1/api-keys/{made['id']}", headers=factory.auth(admin)).json()
        assert (stored["external_id"], stored["meta"]) == (None, None)

    def test_422_for_meta_holding_what_json_cannot(self, client, factory, admin, key):
        record, _ = key
        for literal, error_type in (
            ("NaN", "finite_number"),
            ("-Infinity", "finite_number"),
            ("1e400", "finite_number"),
            ("9" * 5000, "int_parsing_size"),
        ):
            for method, url in (("POST", "/v1/api-keys"), ("PATCH", f"/v1/api-keys/{record.id}")):
                response = client.request(
                    method,
                    url,
                    content=f'{{"meta": {{"plan": "pro", "score": {literal}}}}}',
                    headers=factory.auth(admin) | {"Content-Type": "application/json"},
                )
                assert response.status_code == 422
                assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
                    (["body", "meta", "score"], error_type)
                ]
        assert factory.count_keys() == 1
        assert factory.stored_key(record.id).meta is None

    def test_422_for_meta_over_4_kib_or_not_an_object(self, client, factory, admin, key):
        record, _ = key
        big = {"notes": "x" * 4090}  # 4,102 bytes as compact JSON
        for method, url in (("POST", "/v1/api-keys"), ("PATCH", f"/v1/api-keys/{record.id}")):
            response = client.request(method, url, json={"meta": big}, headers=factory.auth(admin))
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", "meta"]
            assert "at most 4096" in response.json()["detail"][0]["msg"]
            wrong = client.request(method, url, json={"meta": [1]}, headers=factory.auth(admin))
            assert wrong.status_code == 422
        assert factory.count_keys() == 1
        assert factory.stored_key(record.id).meta is None
        exactly = {"notes": "x" * (4096 - len('{"notes":""}'))}
        assert (
            client.post("/v1/api-keys", json={"meta": exactly}, headers=factory.auth(admin))
        ).status_code == 201


class TestWhoSwitchesAKeyOn:
    """A key remembers why it is off (``disabled_by``); a member turns on only a key they
    switched off themselves, an admin any key whose owner is still in the account."""

    @pytest.fixture
    def members_key(self, client, factory, member):
        made = client.post("/v1/api-keys", json={}, headers=factory.auth(member))
        assert made.status_code == 201
        return made.json()

    def _switch(self, client, factory, user, key, on: bool):
        return client.patch(
            f"/v1/api-keys/{key['id']}", json={"enabled": on}, headers=factory.auth(user)
        )

    def _verify(self, client, verifier, key) -> str:
        answer = client.post("/v1/keys/verify", json={"key": key["full_key"]}, headers=verifier)
        return str(answer.json()["code"])

    def _shown(self, client, factory, user, key) -> tuple[str, str | None]:
        got = client.get(f"/v1/api-keys/{key['id']}", headers=factory.auth(user)).json()
        return got["status"], got["disabled_by"]

    def test_200_the_owner_switches_their_own_key_off_and_on(
        self, client, factory, member, members_key, verifier
    ):
        off = self._switch(client, factory, member, members_key, False)
        assert off.status_code == 200
        assert self._shown(client, factory, member, members_key) == ("disabled", "owner")
        on = self._switch(client, factory, member, members_key, True)
        assert on.status_code == 200
        assert self._shown(client, factory, member, members_key) == ("active", None)
        assert self._verify(client, verifier, members_key) == "VALID"

    def test_403_for_a_member_turning_on_what_an_admin_switched_off(
        self, client, factory, admin, member, members_key, verifier
    ):
        assert self._switch(client, factory, admin, members_key, False).status_code == 200
        assert self._shown(client, factory, member, members_key) == ("disabled", "admin")
        refused = self._switch(client, factory, member, members_key, True)
        assert refused.status_code == 403
        assert "only an admin" in refused.json()["detail"]
        assert self._verify(client, verifier, members_key) == "DISABLED"
        stored = factory.stored_key(members_key["id"])
        assert (stored.enabled, stored.disabled_by) == (False, "admin")
        assert self._switch(client, factory, admin, members_key, True).status_code == 200
        assert self._shown(client, factory, member, members_key) == ("active", None)
        assert self._verify(client, verifier, members_key) == "VALID"

    def test_403_for_a_member_removed_and_added_again(
        self, client, factory, acme, admin, member, members_key, verifier
    ):
        # Even a key the member had switched off themselves is off for the removal now.
        self._switch(client, factory, member, members_key, False)
        removed = client.delete(f"/v1/users/{member.id}", headers=factory.auth(admin))
        assert removed.status_code == 204
        factory.join(member, acme)
        assert self._shown(client, factory, member, members_key) == ("disabled", "removal")
        refused = self._switch(client, factory, member, members_key, True)
        assert refused.status_code == 403
        assert self._verify(client, verifier, members_key) == "DISABLED"
        assert self._switch(client, factory, admin, members_key, True).status_code == 200
        assert self._verify(client, verifier, members_key) == "VALID"

    def test_403_for_a_member_deactivated_and_activated_again(
        self, client, factory, admin, member, members_key, verifier
    ):
        factory.set_active(member, False)
        factory.set_active(member, True)
        refused = client.patch(
            f"/v1/api-keys/{members_key['id']}",
            json={"enabled": True},
            headers=factory.fresh_auth(member),
        )
        assert refused.status_code == 403
        assert factory.stored_key(members_key["id"]).disabled_by == "deactivation"
        assert self._verify(client, verifier, members_key) == "DISABLED"
        assert self._switch(client, factory, admin, members_key, True).status_code == 200

    def test_409_for_an_admin_while_the_owner_is_gone(
        self, client, factory, admin, member, members_key, verifier
    ):
        client.delete(f"/v1/users/{member.id}", headers=factory.auth(admin))
        conflict = self._switch(client, factory, admin, members_key, True)
        assert conflict.status_code == 409
        assert self._verify(client, verifier, members_key) == "DISABLED"

    def test_the_console_keeps_the_switch_and_its_reason(
        self, client, factory, admin, member, members_key
    ):
        self._switch(client, factory, admin, members_key, False)
        changed = client.patch(
            f"/apikeys/{members_key['id']}",
            json={"description": "renamed in the console", "flatPermissionsList": []},
            headers=factory.auth(admin),
        )
        assert changed.status_code == 200
        console = client.get(f"/apikeys/{members_key['id']}", headers=factory.auth(admin))
        assert console.json()["status"] == "disabled"
        stored = factory.stored_key(members_key["id"])
        assert (stored.enabled, stored.disabled_by, stored.description) == (
            False,
            "admin",
            "renamed in the console",
        )
        assert self._switch(client, factory, member, members_key, True).status_code == 403


class TestThePolicyBindsEveryChange:
    """A key made before a stricter policy is brought into it by its next change, or the
    change is refused: a PATCH, the console's PATCH and a rotation alike."""

    @pytest.fixture
    def old_key(self, client, factory, admin):
        made = client.post("/v1/api-keys", json={"description": "old"}, headers=factory.auth(admin))
        assert made.status_code == 201 and made.json()["expires_at"] is None
        policy = {"expiry_required": True, "max_key_lifetime_seconds": 86400 * 30}
        assert (
            client.put("/v1/account/policy", json=policy, headers=factory.auth(admin)).status_code
            == 200
        )
        return made.json()

    def _in_a_week(self) -> str:
        return (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def test_403_for_a_patch_that_leaves_the_key_without_an_expiry(
        self, client, factory, admin, old_key
    ):
        for body in ({"permissions": ["readApplications"]}, {"description": "new"}):
            refused = client.patch(
                f"/v1/api-keys/{old_key['id']}", json=body, headers=factory.auth(admin)
            )
            assert refused.status_code == 403
            assert "expire" in refused.json()["detail"]
        stored = factory.stored_key(old_key["id"])
        assert (stored.description, stored.permissions, stored.expires_at) == ("old", [], None)

    def test_200_for_a_patch_that_brings_the_key_into_the_policy(
        self, client, factory, admin, old_key
    ):
        expiry = self._in_a_week()
        body = {"permissions": ["readApplications"], "expires_at": expiry}
        changed = client.patch(
            f"/v1/api-keys/{old_key['id']}", json=body, headers=factory.auth(admin)
        )
        assert (changed.status_code, changed.json()["expires_at"]) == (200, expiry)
        assert factory.stored_key(old_key["id"]).permissions == ["readApplications"]

    def test_200_for_switching_it_off_which_never_widens_it(self, client, factory, admin, old_key):
        off = client.patch(
            f"/v1/api-keys/{old_key['id']}", json={"enabled": False}, headers=factory.auth(admin)
        )
        assert (off.status_code, off.json()["status"]) == (200, "disabled")
        on = client.patch(
            f"/v1/api-keys/{old_key['id']}", json={"enabled": True}, headers=factory.auth(admin)
        )
        assert on.status_code == 403

    def test_403_on_the_console_unless_the_patch_sets_an_expiry(
        self, client, factory, admin, old_key
    ):
        body = {"description": "console", "flatPermissionsList": []}
        refused = client.patch(f"/apikeys/{old_key['id']}", json=body, headers=factory.auth(admin))
        assert refused.status_code == 403
        assert set(refused.json()) == {"error"}
        fixed = client.patch(
            f"/apikeys/{old_key['id']}",
            json=body | {"expiresAt": self._in_a_week()},
            headers=factory.auth(admin),
        )
        assert fixed.status_code == 200
        assert factory.stored_key(old_key["id"]).description == "console"

    def test_403_for_a_rotation_that_would_leave_the_key_without_an_expiry(
        self, client, factory, admin, old_key, verifier
    ):
        refused = client.post(
            f"/v1/api-keys/{old_key['id']}/rotate", json={}, headers=factory.auth(admin)
        )
        assert refused.status_code == 403
        assert "expire" in refused.json()["detail"]
        assert factory.stored_key(old_key["id"]).key_prefix == old_key["key_prefix"]
        verdict = client.post(
            "/v1/keys/verify", json={"key": old_key["full_key"]}, headers=verifier
        ).json()
        assert verdict["code"] == "VALID"  # the old secret, untouched

    def test_200_for_a_rotation_that_gives_the_new_secret_an_expiry(
        self, client, factory, admin, old_key, verifier
    ):
        expiry = self._in_a_week()
        rotated = client.post(
            f"/v1/api-keys/{old_key['id']}/rotate",
            json={"expires_at": expiry},
            headers=factory.auth(admin),
        )
        assert rotated.status_code == 200
        assert rotated.json()["expires_at"] == expiry
        verdict = client.post(
            "/v1/keys/verify", json={"key": rotated.json()["full_key"]}, headers=verifier
        ).json()
        assert (verdict["code"], verdict["expires_at"]) == ("VALID", expiry)
        events = client.get(
            "/v1/audit-events", params={"action": "key.rotated"}, headers=factory.auth(admin)
        ).json()["items"]
        assert events[0]["changes"]["expires_at"] == {"from": None, "to": expiry}

    def test_403_for_a_rotation_past_the_longest_lifetime(self, client, factory, admin, old_key):
        too_late = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        refused = client.post(
            f"/v1/api-keys/{old_key['id']}/rotate",
            json={"expires_at": too_late},
            headers=factory.auth(admin),
        )
        assert refused.status_code == 403
        assert factory.stored_key(old_key["id"]).expires_at is None


def _limited_key(client, factory, admin, **body):
    made = client.post("/v1/api-keys", json=body, headers=factory.auth(admin))
    assert made.status_code == 201, made.text
    return made.json()


class TestCredits:
    def test_200_set_increment_decrement(self, client, factory, admin):
        key = _limited_key(client, factory, admin, credits={"remaining": 10})
        url = f"/v1/api-keys/{key['id']}/credits"
        auth = factory.auth(admin)
        answers = [
            client.post(url, json={"op": op, "value": value}, headers=auth).json()
            for op, value in (("increment", 5), ("decrement", 3), ("set", 42))
        ]
        assert [a["credits"]["remaining"] for a in answers] == [15, 12, 42]
        events = client.get(
            "/v1/audit-events", params={"action": "key.credits_changed"}, headers=auth
        ).json()["items"]
        assert [e["changes"]["remaining"] for e in events] == [42, 12, 15]

    def test_401_without_a_credential(self, client):
        assert (
            client.post("/v1/api-keys/1/credits", json={"op": "set", "value": 1}).status_code == 401
        )

    def test_403_for_a_member_on_their_own_key(self, client, factory, member):
        made = client.post("/v1/api-keys", json={}, headers=factory.auth(member)).json()
        response = client.post(
            f"/v1/api-keys/{made['id']}/credits",
            json={"op": "set", "value": 10},
            headers=factory.auth(member),
        )
        assert response.status_code == 403

    def test_404_for_another_accounts_key(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys/999/credits", json={"op": "set", "value": 1}, headers=factory.auth(admin)
        )
        assert response.status_code == 404

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.post(
            "/v1/api-keys/1/credits", data={"op": "set"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_409_to_increment_or_decrement_unlimited_use_which_only_set_limits(
        self, client, factory, admin
    ):
        plain = _limited_key(client, factory, admin)
        url = f"/v1/api-keys/{plain['id']}/credits"
        auth = factory.auth(admin)
        for op in ("increment", "decrement"):
            refused = client.post(url, json={"op": op, "value": 1}, headers=auth)
            assert refused.status_code == 409
            assert "unlimited use" in refused.json()["detail"]
        assert client.get(f"/v1/api-keys/{plain['id']}", headers=auth).json()["credits"] is None
        given = client.post(url, json={"op": "set", "value": 7}, headers=auth)
        assert given.json() == {"credits": {"remaining": 7, "refill": None}}

    def test_409_below_zero_or_above_the_maximum_and_422_for_a_flag(self, client, factory, admin):
        key = _limited_key(client, factory, admin, credits={"remaining": 2})
        url = f"/v1/api-keys/{key['id']}/credits"
        auth = factory.auth(admin)
        below = client.post(url, json={"op": "decrement", "value": 3}, headers=auth)
        assert (below.status_code, below.json()) == (
            409,
            {"detail": "Credits would be -1: they stay between 0 and 9007199254740991"},
        )
        above = client.post(url, json={"op": "increment", "value": 2**53 - 2}, headers=auth)
        assert above.status_code == 409
        shown = client.get(f"/v1/api-keys/{key['id']}", headers=auth).json()
        assert shown["credits"]["remaining"] == 2

    def test_422_for_a_flag_or_a_value_past_the_maximum(self, client, factory, admin):
        key = _limited_key(client, factory, admin, credits={"remaining": 2})
        url = f"/v1/api-keys/{key['id']}/credits"
        auth = factory.auth(admin)
        flag = client.post(url, json={"op": "set", "value": True}, headers=auth)
        assert (flag.status_code, flag.json()["detail"][0]["type"]) == (422, "int_type")
        huge = client.post(url, json={"op": "set", "value": 2**53}, headers=auth)
        assert (huge.status_code, huge.json()["detail"][0]["loc"]) == (422, ["body", "value"])
        shown = client.get(f"/v1/api-keys/{key['id']}", headers=auth).json()
        assert shown["credits"]["remaining"] == 2
