"""``POST /v1/keys/verify``: who may verify, every code, no stale answers, no needless SQL."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from keyplane.app import create_app, create_data_app
from keyplane.db.access import CANNOT_VERIFY
from keyplane.db.crypto import generate_api_key
from keyplane.db.models import ApiKey, Role
from keyplane.db.permissions import VERIFY


@pytest.fixture
def key(factory, admin, acme):
    return factory.api_key(admin, acme, permissions=("readApplications",))


@pytest.fixture
def gate(factory, acme):
    """An admin of acme whose key the account's API verifies with."""
    return factory.user(acme, Role.ADMIN)


@pytest.fixture
def verifier_key(factory, acme, gate):
    return factory.verifier_key(gate, acme)


@pytest.fixture
def verifier(verifier_key):
    """Here, verify's credential is a verifier key (as an API in production holds)."""
    return verifier_key[1]


@pytest.fixture
def lookups(app):
    """How many queries verification's reader has made so far."""
    reader = app.service.runtime.lookups
    return lambda: reader.queries


def _verify(client, verifier, full_key, permissions=None):
    body = {"key": full_key} | ({"permissions": permissions} if permissions is not None else {})
    response = client.post("/v1/keys/verify", json=body, headers=verifier)
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
    def test_401_without_a_credential(self, client, key, lookups):
        before = lookups()
        response = client.post("/v1/keys/verify", json={"key": key[1]})
        assert response.status_code == 401
        assert response.json() == {"detail": "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert lookups() == before  # not even the key was looked up

    @pytest.mark.parametrize(
        "credential", ["not-a-token", "kp_short", "unknown key", "revoked", "gone", "Basic"]
    )
    def test_401_for_a_credential_that_does_not_work(
        self, client, factory, acme, gate, verifier_key, key, credential
    ):
        record, headers = verifier_key
        if credential == "unknown key":
            headers = {"Authorization": f"Bearer {generate_api_key()}"}
        elif credential == "revoked":
            client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(gate))
        elif credential == "gone":  # an admin's token, once the admin is deactivated
            headers = factory.auth(gate)
            factory.set_active(gate, False)
        elif credential == "Basic":
            headers = {"Authorization": "Basic dXNlcjpwYXNz"}
        else:
            headers = {"Authorization": f"Bearer {credential}"}
        response = client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"] in {"Could not validate credentials", "Not authenticated"}
        assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_403_for_a_key_without_the_right_or_a_members_token(
        self, client, factory, acme, admin, member, key
    ):
        _, plain = factory.api_key(admin, acme, permissions=("readApplications",))
        for headers in (
            {"Authorization": f"Bearer {plain}"},
            factory.auth(member),
            factory.auth(member) | {"x-account-id": str(acme.id)},
        ):
            response = client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
            assert response.status_code == 403
            assert response.json() == {"detail": CANNOT_VERIFY}

    def test_403_for_an_account_the_credential_is_not_of(
        self, client, factory, acme, admin, verifier, key
    ):
        globex = factory.account("globex")
        for headers in (
            verifier | {"x-account-id": str(globex.id)},
            factory.auth(admin) | {"x-account-id": str(globex.id)},
        ):
            response = client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
            assert response.status_code == 403

    def test_200_for_each_kind_of_verifier(self, client, factory, acme, admin, verifier, key):
        for headers in (
            verifier,
            verifier | {"x-account-id": str(acme.id)},
            factory.auth(admin),
            factory.auth(admin) | {"x-account-id": str(acme.id)},
        ):
            assert _verify(client, headers, key[1])["code"] == "VALID"

    def test_200_a_verifier_of_another_account_is_told_exactly_what_a_missing_key_is(
        self, client, factory, acme, key, verifier
    ):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        _, theirs = factory.verifier_key(outsider, globex)
        for headers in (theirs, factory.auth(outsider)):
            answers = [
                client.post("/v1/keys/verify", json=body, headers=headers)
                for body in (
                    {"key": key[1], "permissions": ["readApplications"]},
                    {"key": generate_api_key(), "permissions": ["readApplications"]},
                )
            ]
            assert [a.status_code for a in answers] == [200, 200]
            assert answers[0].json() == answers[1].json()
            assert answers[0].json() == {"valid": False, "code": "NOT_FOUND"} | NOTHING_TOLD
        assert _verify(client, verifier, key[1])["code"] == "VALID"  # its own account's verifier

    def test_200_one_query_finds_the_verifier_and_the_key(self, client, verifier, key, lookups):
        before = lookups()
        assert _verify(client, verifier, key[1])["code"] == "VALID"
        assert lookups() == before + 1

    def test_200_a_revoked_verifier_is_refused_on_its_very_next_verify(
        self, client, factory, gate, verifier_key, key
    ):
        record, headers = verifier_key
        assert _verify(client, headers, key[1])["code"] == "VALID"
        client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(gate))
        response = client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
        assert response.status_code == 401

    def test_200_losing_the_right_is_a_403_on_the_very_next_verify(
        self, client, factory, gate, verifier_key, key
    ):
        record, headers = verifier_key
        assert _verify(client, headers, key[1])["code"] == "VALID"
        changed = client.patch(
            f"/v1/api-keys/{record.id}", json={"permissions": []}, headers=factory.auth(gate)
        )
        assert changed.status_code == 200
        response = client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
        assert response.status_code == 403

    def test_200_a_verifier_key_verifies_itself(self, client, verifier_key):
        record, headers = verifier_key
        full_key = headers["Authorization"].removeprefix("Bearer ")
        answer = _verify(client, headers, full_key, [VERIFY])
        assert (answer["code"], answer["key_id"], answer["permissions"]) == (
            "VALID",
            record.id,
            [VERIFY],
        )

    def test_200_valid_tells_the_keys_metadata(self, client, verifier, acme, admin, key):
        record, full_key = key
        assert _verify(client, verifier, full_key, ["readApplications"]) == {
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

    def test_200_not_found_for_an_unknown_well_formed_key(self, client, verifier, lookups):
        from keyplane.db.crypto import generate_api_key

        before = lookups()
        assert (
            _verify(client, verifier, generate_api_key())
            == {
                "valid": False,
                "code": "NOT_FOUND",
            }
            | NOTHING_TOLD
        )
        assert lookups() == before + 1  # it did look: once, for the verifier and the key

    @pytest.mark.parametrize(
        "malformed",
        ["", "not-a-key", "kp_short", "kp_" + "A" * 36, "ghp_" + "a" * 36],
    )
    def test_200_not_found_for_a_malformed_key_without_any_sql(
        self, client, verifier, key, lookups, statements, malformed
    ):
        typo = key[1][:-1] + ("A" if key[1][-1] != "A" else "B")
        for candidate in (malformed, typo):
            before = lookups()
            assert _verify(client, verifier, candidate)["code"] == "NOT_FOUND"
            assert lookups() == before + 1  # the verifier's lookup only
            assert statements == []

    def test_200_revoked_on_the_very_next_verify(self, client, verifier, factory, admin, key):
        record, full_key = key
        assert _verify(client, verifier, full_key)["code"] == "VALID"
        client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert (
            _verify(client, verifier, full_key)
            == {"valid": False, "code": "REVOKED"} | NOTHING_TOLD
        )

    def test_200_expired_once_the_expiry_passes(self, client, verifier, factory, acme, admin):
        _, full_key = factory.api_key(
            admin, acme, expires_at=datetime.now(UTC) + timedelta(seconds=2)
        )
        assert _verify(client, verifier, full_key)["code"] == "VALID"
        time.sleep(2.1)
        assert (
            _verify(client, verifier, full_key)
            == {"valid": False, "code": "EXPIRED"} | NOTHING_TOLD
        )

    def test_200_insufficient_permissions_on_the_next_verify(
        self, client, verifier, factory, admin, key
    ):
        record, full_key = key
        required = ["readApplications"]
        assert _verify(client, verifier, full_key, required)["code"] == "VALID"
        assert (
            _verify(client, verifier, full_key, ["writeApplications"])
            == {
                "valid": False,
                "code": "INSUFFICIENT_PERMISSIONS",
            }
            | NOTHING_TOLD
        )
        client.patch(
            f"/v1/api-keys/{record.id}", json={"permissions": []}, headers=factory.auth(admin)
        )
        assert _verify(client, verifier, full_key, required)["code"] == "INSUFFICIENT_PERMISSIONS"
        assert _verify(client, verifier, full_key)["code"] == "VALID"  # no permission asked for

    def test_200_last_used_at_is_written_off_the_request_and_coalesced(
        self, app, client, verifier, factory, sessions, admin, key, statements
    ):
        record, full_key = key
        flusher = app.service.flusher  # its timer stopped by ``statements``
        statements.clear()
        _verify(client, verifier, full_key)
        assert statements == []  # the verify itself wrote (and read) nothing through the engine
        assert factory.stored_key(record.id).last_used_at is None
        flusher.flush()
        first = factory.stored_key(record.id).last_used_at
        assert first is not None
        shown = client.get(f"/v1/api-keys/{record.id}", headers=factory.auth(admin)).json()
        assert shown["last_used_at"] is not None
        _verify(client, verifier, full_key)  # within the 5 s resolution: nothing to write
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
        _verify(client, verifier, full_key)  # the stored value is older than 5 s: written again
        flusher.flush()
        assert factory.stored_key(record.id).last_used_at > first

    def test_200_account_id_answers_another_accounts_key_as_not_found(
        self, client, verifier, factory, acme, admin, key
    ):
        _, full_key = key
        globex = factory.account("globex")
        mine = client.post(
            "/v1/keys/verify", json={"key": full_key, "account_id": acme.id}, headers=verifier
        )
        theirs = client.post(
            "/v1/keys/verify", json={"key": full_key, "account_id": globex.id}, headers=verifier
        )
        unknown = client.post(
            "/v1/keys/verify",
            json={"key": generate_api_key(), "account_id": globex.id},
            headers=verifier,
        )
        assert mine.json()["code"] == "VALID"
        assert theirs.status_code == unknown.status_code == 200
        assert (
            theirs.json() == unknown.json() == {"valid": False, "code": "NOT_FOUND"} | NOTHING_TOLD
        )

    def test_200_disabled_when_the_owner_is_deactivated_and_after(
        self, client, verifier, factory, acme, admin, key
    ):
        from keyplane import db
        from keyplane.db.models import User

        _, full_key = key
        with factory.sessions() as session, session.begin():
            user = session.get(User, admin.id)
            assert db.accounts.set_user_active(session, user, False, now=datetime.now(UTC)) == 1
        assert (
            _verify(client, verifier, full_key)
            == {"valid": False, "code": "DISABLED"} | NOTHING_TOLD
        )
        with factory.sessions() as session, session.begin():
            user = session.get(User, admin.id)
            db.accounts.set_user_active(session, user, True, now=datetime.now(UTC))
        assert (
            _verify(client, verifier, full_key)["code"] == "DISABLED"
        )  # not revived by reactivation

    def test_200_disabled_ranks_after_revoked_and_expired(
        self, client, verifier, factory, admin, key
    ):
        record, full_key = key
        client.patch(
            f"/v1/api-keys/{record.id}", json={"enabled": False}, headers=factory.auth(admin)
        )
        assert _verify(client, verifier, full_key)["code"] == "DISABLED"
        client.delete(f"/v1/api-keys/{record.id}", headers=factory.auth(admin))
        assert _verify(client, verifier, full_key)["code"] == "REVOKED"

    def test_415_for_a_form_body(self, client, verifier, key):
        response = client.post("/v1/keys/verify", data={"key": key[1]}, headers=verifier)
        assert response.status_code == 415

    def test_422_without_a_key(self, client, verifier):
        response = client.post("/v1/keys/verify", json={"permissions": []}, headers=verifier)
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

    def test_verify_and_health_answer_as_in_the_whole_app(self, data_client, client, verifier, key):
        record, full_key = key
        alone = _verify(data_client, verifier, full_key, ["readApplications"])
        assert alone == _verify(client, verifier, full_key, ["readApplications"])
        assert (alone["valid"], alone["key_id"]) == (True, record.id)
        assert data_client.get("/healthz").json() == {"status": "ok"}
        invalid = data_client.post("/v1/keys/verify", json={"permissions": []}, headers=verifier)
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


class TestTheRightToVerify:
    """``keyplane.verify``: Keyplane's own permission, outside the customer catalog."""

    def test_it_is_not_in_the_catalog_and_cannot_be_added_or_removed(self, client, factory, admin):
        headers = factory.auth(admin)
        listed = client.get("/v1/permissions", headers=headers).json()
        assert VERIFY not in [p["id"] for p in listed["items"]]
        added = client.post("/v1/permissions", json={"id": "keyplane.mine"}, headers=headers)
        assert added.status_code == 409
        removed = client.delete(f"/v1/permissions/{VERIFY}", headers=headers)
        assert removed.status_code == 404
        granted = client.post("/v1/api-keys", json={"permissions": [VERIFY]}, headers=headers)
        assert granted.status_code == 201  # still there, for admins to grant
        assert granted.json()["permissions"] == [VERIFY]

    def test_admins_grant_it_and_members_cannot(self, client, factory, member):
        headers = factory.auth(member)
        made = client.post("/v1/api-keys", json={"permissions": [VERIFY]}, headers=headers)
        assert (made.status_code, made.json()) == (
            403,
            {"detail": f"Only account admins grant {VERIFY}"},
        )
        own = client.post("/v1/api-keys", json={}, headers=headers).json()
        changed = client.patch(
            f"/v1/api-keys/{own['id']}", json={"permissions": [VERIFY]}, headers=headers
        )
        assert changed.status_code == 403
        assert client.get(f"/v1/api-keys/{own['id']}", headers=headers).json()["permissions"] == []

    def test_a_policy_cannot_let_members_grant_it(self, client, factory, admin):
        policy = {"max_key_lifetime_seconds": None, "expiry_required": False}
        response = client.put(
            "/v1/account/policy",
            json=policy | {"member_permissions": [VERIFY]},
            headers=factory.auth(admin),
        )
        assert 400 <= response.status_code < 500


@pytest.fixture(scope="module")
def open_client(settings, engine):
    """KEYPLANE_VERIFY_OPEN=true: verify as before verifiers, for a trusted network."""
    with create_app(replace(settings, verify_open=True)).test_client() as client:
        yield client


class TestOpenVerify:
    def test_a_key_verifies_without_a_credential(self, open_client, key):
        answer = open_client.post("/v1/keys/verify", json={"key": key[1]})
        assert (answer.status_code, answer.json()["code"]) == (200, "VALID")

    def test_a_credential_given_is_still_checked(self, open_client, factory, acme, admin, key):
        _, plain = factory.api_key(admin, acme)
        for headers, status in (
            ({"Authorization": "Bearer not-a-token"}, 401),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
            ({"Authorization": f"Token {plain}"}, 401),
            ({"Authorization": f"Bearer {plain}"}, 403),
        ):
            answer = open_client.post("/v1/keys/verify", json={"key": key[1]}, headers=headers)
            assert answer.status_code == status

    def test_only_verify_is_open(self, open_client):
        assert open_client.get("/v1/api-keys").status_code == 401
