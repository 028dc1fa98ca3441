"""``POST /v1/keys/verify``: every code, no stale answers, no needless SQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from db.crypto import generate_api_key
from db.models import ApiKey
from keyplane.app import create_data_app


@pytest.fixture
def key(factory, admin, acme):
    return factory.api_key(admin, acme, permissions=("readApplications",))


@pytest.fixture
def lookups(app):
    """How many queries verification's reader has made so far."""
    reader = app.service.runtime.lookups
    return lambda: reader.queries


def _verify(client, full_key, permissions=None):
    body = {"key": full_key} | ({"permissions": permissions} if permissions is not None else {})
    response = client.post("/v1/keys/verify", json=body)
    assert response.status_code == 200
    return response.json()


NOTHING_TOLD = {
    "key_id": None,
    "account_id": None,
    "user_id": None,
    "permissions": [],
    "expires_at": None,
    "rotation": None,
    "external_id": None,
    "meta": None,
    "identity": None,
    "ratelimits": [],
    "credits_remaining": {"key": None, "identity": None},
}


class TestVerify:
    def test_200_valid_tells_the_keys_metadata(self, client, acme, admin, key):
        record, full_key = key
        assert _verify(client, full_key, ["readApplications"]) == {
            "valid": True,
            "code": "VALID",
            "key_id": record.id,
            "account_id": acme.id,
            "user_id": admin.id,
            "permissions": ["readApplications"],
            "expires_at": None,
            "rotation": None,
            "external_id": None,
            "meta": None,
            "identity": None,
            "ratelimits": [],
            "credits_remaining": {"key": None, "identity": None},
        }

    def test_200_not_found_for_an_unknown_well_formed_key(self, client, lookups):
        from db.crypto import generate_api_key

        before = lookups()
        assert (
            _verify(client, generate_api_key())
            == {
                "valid": False,
                "code": "NOT_FOUND",
            }
            | NOTHING_TOLD
        )
        assert lookups() == before + 1  # it did look

    @pytest.mark.parametrize(
        "malformed",
        ["", "not-a-key", "kp_short", "kp_" + "A" * 36, "ghp_" + "a" * 36],
    )
    def test_200_not_found_for_a_malformed_key_without_any_sql(
        self, client, key, lookups, statements, malformed
    ):
        typo = key[1][:-1] + ("A" if key[1][-1] != "A" else "B")
        for candidate in (malformed, typo):
            before = lookups()
            assert _verify(client, candidate)["code"] == "NOT_FOUND"
            assert lookups() == before
            assert statements == []

    def test_200_revoked_on_the_very_next_verify(self, client, factory, admin, key):
        record, full_key = key
        assert _verify(client, full_key)["code"] == "VALID"
        client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert _verify(client, full_key) == {"valid": False, "code": "REVOKED"} | NOTHING_TOLD

    def test_200_expired_once_the_expiry_passes(self, client, factory, acme, admin):
        _, full_key = factory.api_key(
            admin, acme, expires_at=datetime.now(UTC) + timedelta(seconds=2)
        )
        assert _verify(client, full_key)["code"] == "VALID"
        time.sleep(2.1)
        assert _verify(client, full_key) == {"valid": False, "code": "EXPIRED"} | NOTHING_TOLD

    def test_200_insufficient_permissions_on_the_next_verify(self, client, factory, admin, key):
        record, full_key = key
        required = ["readApplications"]
        assert _verify(client, full_key, required)["code"] == "VALID"
        assert (
            _verify(client, full_key, ["writeApplications"])
            == {
                "valid": False,
                "code": "INSUFFICIENT_PERMISSIONS",
            }
            | NOTHING_TOLD
        )
        client.patch(
            f"/v1/api-keys/{record.id}", json={"permissions": []}, headers=factory.auth(admin)
        )
        assert _verify(client, full_key, required)["code"] == "INSUFFICIENT_PERMISSIONS"
        assert _verify(client, full_key)["code"] == "VALID"  # no permission asked for

    def test_200_last_used_at_is_written_off_the_request_and_coalesced(
        self, app, client, factory, sessions, admin, key, statements
    ):
        record, full_key = key
        flusher = app.service.flusher  # its timer stopped by ``statements``
        statements.clear()
        _verify(client, full_key)
        assert statements == []  # the verify itself wrote (and read) nothing through the engine
        assert factory.stored_key(record.id).last_used_at is None
        flusher.flush()
        first = factory.stored_key(record.id).last_used_at
        assert first is not None
        shown = client.get(f"/v1/api-keys/{record.id}", headers=factory.auth(admin)).json()
        assert shown["last_used_at"] is not None
        _verify(client, full_key)  # within the 5 s resolution: nothing to write
        statements.clear()
        flusher.flush()
        assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
        assert factory.stored_key(record.id).last_used_at == first
        with sessions() as session, session.begin():
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == record.id)
                .values(last_used_at=first - timedelta(seconds=6))
            )
        _verify(client, full_key)  # the stored value is older than 5 s: written again
        flusher.flush()
        assert factory.stored_key(record.id).last_used_at > first

    def test_200_account_id_answers_another_accounts_key_as_not_found(
        self, client, factory, acme, admin, key
    ):
        _, full_key = key
        globex = factory.account("globex")
        mine = client.post("/v1/keys/verify", json={"key": full_key, "account_id": acme.id})
        theirs = client.post("/v1/keys/verify", json={"key": full_key, "account_id": globex.id})
        unknown = client.post(
            "/v1/keys/verify", json={"key": generate_api_key(), "account_id": globex.id}
        )
        assert mine.json()["code"] == "VALID"
        assert theirs.status_code == unknown.status_code == 200
        assert (
            theirs.json() == unknown.json() == {"valid": False, "code": "NOT_FOUND"} | NOTHING_TOLD
        )

    def test_200_disabled_when_the_owner_is_deactivated_and_after(
        self, client, factory, acme, admin, key
    ):
        import db.accounts
        from db.models import User

        _, full_key = key
        with factory.sessions() as session, session.begin():
            user = session.get(User, admin.id)
            assert db.accounts.set_user_active(session, user, False, now=datetime.now(UTC)) == 1
        assert _verify(client, full_key) == {"valid": False, "code": "DISABLED"} | NOTHING_TOLD
        with factory.sessions() as session, session.begin():
            user = session.get(User, admin.id)
            db.accounts.set_user_active(session, user, True, now=datetime.now(UTC))
        assert _verify(client, full_key)["code"] == "DISABLED"  # not revived by reactivation

    def test_200_disabled_ranks_after_revoked_and_expired(self, client, factory, admin, key):
        record, full_key = key
        client.patch(
            f"/v1/api-keys/{record.id}", json={"enabled": False}, headers=factory.auth(admin)
        )
        assert _verify(client, full_key)["code"] == "DISABLED"
        client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert _verify(client, full_key)["code"] == "REVOKED"

    def test_415_for_a_form_body(self, client, key):
        assert client.post("/v1/keys/verify", data={"key": key[1]}).status_code == 415

    def test_422_without_a_key(self, client):
        response = client.post("/v1/keys/verify", json={"permissions": []})
        assert response.status_code == 422
        assert response.json()["detail"] == [
            {"loc": ["body", "key"], "msg": "Field required", "type": "missing"}
        ]


@pytest.fixture(scope="module")
def data_client(settings, engine):
    with create_data_app(settings).test_client() as client:
        yield client


class TestDataPlaneAlone:
    """``keyplane serve --plane data``: verification and health, scaled apart."""

    def test_verify_and_health_answer_as_in_the_whole_app(self, data_client, client, key):
        record, full_key = key
        alone = _verify(data_client, full_key, ["readApplications"])
        assert alone == _verify(client, full_key, ["readApplications"])
        assert (alone["valid"], alone["key_id"]) == (True, record.id)
        assert data_client.get("/healthz").json() == {"status": "ok"}
        invalid = data_client.post("/v1/keys/verify", json={"permissions": []})
        assert (invalid.status_code, invalid.json()) == (
            422,
            {"detail": [{"loc": ["body", "key"], "msg": "Field required", "type": "missing"}]},
        )

    def test_its_spec_holds_its_own_paths_only(self, data_client):
        spec = data_client.get("/openapi.json")
        assert spec.status_code == 200
        assert sorted(spec.json()["paths"]) == [
            "/healthz",
            "/readyz",
            "/v1/keys/verify",
            "/v1/ratelimit",
        ]

    def test_management_paths_are_not_served_here(self, data_client, factory, admin):
        for method, path in (("GET", "/v1/api-keys"), ("GET", "/apikeys"), ("GET", "/ui/")):
            response = data_client.request(method, path, headers=factory.auth(admin))
            assert response.status_code == 404, path
