"""``/v1/users/me`` and ``/v1/users``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyplane import db
from keyplane.db.errors import Conflict
from keyplane.db.models import Role
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

    def test_401_for_a_user_token_in_x_api_key_which_carries_api_keys_only(
        self, client, factory, admin
    ):
        for path in ("/v1/users/me", "/v1/api-keys", "/apikeys"):
            response = client.get(path, headers={"X-API-Key": factory.token(admin)})
            assert response.status_code == 401, path
        assert client.get("/v1/users/me", headers=factory.auth(admin)).status_code == 200

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

    def test_200_ignores_an_unknown_query_parameter_as_fastapi_does(self, client, factory, admin):
        response = client.get("/v1/users", params={"role": "admin"}, headers=factory.auth(admin))
        assert response.status_code == 200
        assert [m["id"] for m in response.json()["items"]] == [admin.id]

    def test_422_for_an_account_header_that_is_not_an_id(self, client, factory, admin):
        response = client.get("/v1/users", headers={**factory.auth(admin), "x-account-id": "acme"})
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert (error["loc"], error["type"], error["input"]) == (
            ["header", "x-account-id"],
            "string_pattern_mismatch",
            "acme",
        )


class TestCreate:
    def test_201_adds_a_user_named_in_the_account_who_can_sign_in(
        self, client, factory, acme, admin
    ):
        response = client.post(
            "/v1/users",
            json={"username": "newbie", "password": "a-long-password", "role": "member"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 201
        assert response.json()["username"] == f"newbie@{acme.id}"
        assert response.json()["role"] == "member"
        for username in (f"newbie@{acme.id}", f"NewBie@{acme.id}"):
            token = _login(client, username, "a-long-password").json()["access_token"]
            me = client.get("/v1/users/me", headers=_bearer(token)).json()
            assert me["username"] == f"newbie@{acme.id}"
            assert me["accounts"] == [{"id": acme.id, "name": "acme", "role": "member"}]
        # The bare name is not theirs: it names no one, or someone service-wide.
        assert _login(client, "newbie", "a-long-password").status_code == 400

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

    @pytest.mark.parametrize("look_alike", ["carol", "Carol", "CAROL", "caro1", "car.ol", "carol-"])
    def test_409_for_a_name_or_a_look_alike_taken_in_this_account(
        self, client, factory, acme, admin, look_alike
    ):
        first = client.post(
            "/v1/users",
            json={"username": "carol", "password": PASSWORD},
            headers=factory.auth(admin),
        )
        assert first.status_code == 201
        again = client.post(
            "/v1/users",
            json={"username": look_alike, "password": PASSWORD},
            headers=factory.auth(admin),
        )
        if look_alike.endswith("-"):  # a name ends with a letter or digit
            assert again.status_code == 422
            return
        assert again.status_code == 409
        assert "already taken in this account" in again.json()["detail"]
        assert [m["username"] for m in _members(client, factory, admin)].count(
            f"carol@{acme.id}"
        ) == 1

    def test_201_for_a_name_taken_in_another_account_which_is_not_told(
        self, client, factory, acme, admin
    ):
        globex = factory.account("globex")
        their_admin = factory.user(globex, Role.ADMIN)
        theirs = client.post(
            "/v1/users",
            json={"username": "dave", "password": PASSWORD},
            headers=factory.auth(their_admin),
        )
        assert theirs.status_code == 201
        taken_elsewhere, never_used = (
            client.post(
                "/v1/users",
                json={"username": name, "password": f"{name}-password"},
                headers=factory.auth(admin),
            )
            for name in ("dave", "erin")
        )
        assert taken_elsewhere.status_code == never_used.status_code == 201
        assert set(taken_elsewhere.json()) == set(never_used.json())
        assert taken_elsewhere.json()["username"] == f"dave@{acme.id}"
        # Two daves, each signing in as their own.
        ours = _login(client, f"dave@{acme.id}", "dave-password").json()["access_token"]
        assert client.get("/v1/users/me", headers=_bearer(ours)).json()["accounts"][0]["id"] == (
            acme.id
        )
        assert _login(client, f"dave@{globex.id}", PASSWORD).status_code == 200

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


def _members(client, factory, admin):
    return client.get("/v1/users", headers=factory.auth(admin)).json()["items"]


def _login(client, username: str, password: str):
    return client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


NEW_PASSWORD = "staple-lantern-orbit-42"


class TestChangePassword:
    def test_200_ends_every_earlier_token_and_answers_a_new_one(self, client, factory, admin):
        earlier = _login(client, "ada", PASSWORD).json()["access_token"]
        response = client.post(
            "/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=_bearer(earlier),
        )
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        new_token = response.json()["access_token"]
        assert client.get("/v1/users/me", headers=_bearer(earlier)).status_code == 401
        assert client.get("/v1/users/me", headers=factory.auth(admin)).status_code == 401
        assert client.get("/v1/users/me", headers=_bearer(new_token)).status_code == 200
        assert _login(client, "ada", PASSWORD).status_code == 400
        assert _login(client, "ada", NEW_PASSWORD).status_code == 200
        events = client.get(
            "/v1/audit-events",
            params={"action": "user.password_changed"},
            headers=_bearer(new_token),
        ).json()["items"]
        assert [(e["actor"], e["target"]) for e in events] == [
            (
                {"type": "user", "id": admin.id, "address": "testclient"},
                {"type": "user", "id": str(admin.id)},
            )
        ]

    def test_401_without_a_credential(self, client):
        body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert client.post("/v1/users/me/password", json=body).status_code == 401

    def test_403_for_an_api_key_principal(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        response = client.post(
            "/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"X-API-Key": full_key},
        )
        assert response.status_code == 403
        assert _login(client, "ada", PASSWORD).status_code == 200

    def test_409_when_the_password_changed_meanwhile(self, factory, admin, client):
        # Over HTTP in sequence, the first change ends the other token (401) before a
        # 409 could show; the race is in tests/test_concurrency.py. Here, the write the
        # handler makes: only over the password it checked.
        with factory.sessions() as session, session.begin(), pytest.raises(Conflict):
            db.users.set_password(
                session,
                admin.id,
                "new-hash",
                replacing="the hash of a password that was changed meanwhile",
                actor=db.audit.Actor.user(admin.id),
                action="user.password_changed",
                now=datetime.now(UTC),
            )
        assert _login(client, "ada", PASSWORD).status_code == 200

    def test_415_for_a_form_body(self, client, factory, admin):
        response = client.post(
            "/v1/users/me/password",
            data={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert response.status_code == 415

    def test_403_for_a_wrong_current_password(self, client, factory, admin):
        wrong = client.post(
            "/v1/users/me/password",
            json={"current_password": "not-it-at-all", "new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert wrong.status_code == 403
        assert wrong.json() == {"detail": "Incorrect current password"}
        assert _login(client, "ada", PASSWORD).status_code == 200

    def test_422_for_a_short_new_password(self, client, factory, admin):
        short = client.post(
            "/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": "short"},
            headers=factory.auth(admin),
        )
        assert short.status_code == 422
        assert short.json()["detail"][0]["loc"] == ["body", "new_password"]
        assert _login(client, "ada", PASSWORD).status_code == 200

    def test_429_after_too_many_wrong_current_passwords(self, client, factory, admin, settings):
        statuses = [
            client.post(
                "/v1/users/me/password",
                json={"current_password": f"wrong-{i}-password", "new_password": NEW_PASSWORD},
                headers=factory.auth(admin),
            ).status_code
            for i in range(settings.login_max_failures + 1)
        ]
        assert statuses == [403] * settings.login_max_failures + [429]
        assert _login(client, "ada", PASSWORD).status_code == 429  # the same count


class TestUpdate:
    def test_200_changes_the_role_and_audits_it(self, client, factory, admin, member):
        response = client.patch(
            f"/v1/users/{member.id}", json={"role": "admin"}, headers=factory.auth(admin)
        )
        assert response.status_code == 200
        assert (response.json()["username"], response.json()["role"]) == ("max", "admin")
        me = client.get("/v1/users/me", headers=factory.auth(member)).json()
        assert me["accounts"][0]["role"] == "admin"
        events = client.get(
            "/v1/audit-events", params={"action": "user.role_changed"}, headers=factory.auth(admin)
        ).json()["items"]
        assert events[0]["changes"] == {"role": {"from": "member", "to": "admin"}}

    def test_401_without_a_credential(self, client, member):
        assert client.patch(f"/v1/users/{member.id}", json={"role": "admin"}).status_code == 401

    def test_403_for_a_member_promoting_themselves(self, client, factory, member):
        response = client.patch(
            f"/v1/users/{member.id}", json={"role": "admin"}, headers=factory.auth(member)
        )
        assert response.status_code == 403
        me = client.get("/v1/users/me", headers=factory.auth(member)).json()
        assert me["accounts"][0]["role"] == "member"

    def test_404_for_a_user_of_another_account(self, client, factory, admin):
        stranger = factory.user(factory.account("globex"), Role.MEMBER)
        response = client.patch(
            f"/v1/users/{stranger.id}", json={"role": "admin"}, headers=factory.auth(admin)
        )
        assert response.status_code == 404
        assert response.json() == {"detail": "User not found in this account"}

    def test_409_for_the_last_admin_stepping_down(self, client, factory, admin, member):
        response = client.patch(
            f"/v1/users/{admin.id}", json={"role": "member"}, headers=factory.auth(admin)
        )
        assert response.status_code == 409
        assert "at least one admin" in response.json()["detail"]
        me = client.get("/v1/users/me", headers=factory.auth(admin)).json()
        assert me["accounts"][0]["role"] == "admin"

    def test_415_for_a_form_body(self, client, factory, admin, member):
        response = client.patch(
            f"/v1/users/{member.id}", data={"role": "admin"}, headers=factory.auth(admin)
        )
        assert response.status_code == 415

    def test_422_for_an_unknown_role(self, client, factory, admin, member):
        response = client.patch(
            f"/v1/users/{member.id}", json={"role": "owner"}, headers=factory.auth(admin)
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "role"]


class TestRemove:
    def test_204_removes_the_member_and_switches_their_keys_off(
        self, client, factory, acme, admin, member, verifier
    ):
        key, full_key = factory.api_key(member, acme)
        globex = factory.account("globex")
        factory.join(member, globex)
        _elsewhere, elsewhere_key = factory.api_key(member, globex)
        response = client.delete(f"/v1/users/{member.id}", headers=factory.auth(admin))
        assert response.status_code == 204
        members = client.get("/v1/users", headers=factory.auth(admin)).json()["items"]
        assert [m["username"] for m in members] == ["ada"]
        verdict = client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()
        assert (verdict["valid"], verdict["code"]) == (False, "DISABLED")
        listed = client.get(f"/v1/api-keys/{key.id}", headers=factory.auth(admin)).json()
        assert (listed["status"], listed["enabled"]) == ("disabled", False)
        # Their key in their other account is untouched.
        assert client.post(
            "/v1/keys/verify", json={"key": elsewhere_key}, headers=factory.verifier(globex)
        ).json()["valid"]
        # Back in the account, their keys stay off until someone turns them on.
        factory.join(member, acme)
        assert (
            client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()["code"]
            == "DISABLED"
        )
        turned_on = client.patch(
            f"/v1/api-keys/{key.id}", json={"enabled": True}, headers=factory.auth(admin)
        )
        assert turned_on.status_code == 200
        assert (
            client.post("/v1/keys/verify", json={"key": full_key}, headers=verifier).json()["code"]
            == "VALID"
        )
        events = client.get(
            "/v1/audit-events", params={"action": "user.removed"}, headers=factory.auth(admin)
        ).json()["items"]
        assert events[0]["changes"] == {"role": "member", "keys_disabled": 1}

    def test_401_without_a_credential(self, client, member):
        assert client.delete(f"/v1/users/{member.id}").status_code == 401

    def test_403_for_a_member(self, client, factory, admin, member):
        response = client.delete(f"/v1/users/{admin.id}", headers=factory.auth(member))
        assert response.status_code == 403
        assert len(client.get("/v1/users", headers=factory.auth(admin)).json()["items"]) == 2

    def test_404_for_a_user_of_another_account(self, client, factory, admin):
        stranger = factory.user(factory.account("globex"), Role.MEMBER)
        response = client.delete(f"/v1/users/{stranger.id}", headers=factory.auth(admin))
        assert response.status_code == 404

    def test_409_for_the_last_admin(self, client, factory, admin, member):
        response = client.delete(f"/v1/users/{admin.id}", headers=factory.auth(admin))
        assert response.status_code == 409
        assert len(client.get("/v1/users", headers=factory.auth(admin)).json()["items"]) == 2

    def test_422_for_a_non_numeric_id(self, client, factory, admin):
        response = client.delete("/v1/users/abc", headers=factory.auth(admin))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


class TestResetPassword:
    def test_204_sets_the_password_and_ends_the_members_tokens(
        self, client, factory, admin, member
    ):
        response = client.put(
            f"/v1/users/{member.id}/password",
            json={"new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert response.status_code == 204
        assert client.get("/v1/users/me", headers=factory.auth(member)).status_code == 401
        assert _login(client, "max", PASSWORD).status_code == 400
        assert _login(client, "max", NEW_PASSWORD).status_code == 200
        events = client.get(
            "/v1/audit-events",
            params={"action": "user.password_reset"},
            headers=factory.auth(admin),
        ).json()["items"]
        assert events[0]["actor"] == {"type": "user", "id": admin.id, "address": "testclient"}

    def test_401_without_a_credential(self, client, member):
        response = client.put(
            f"/v1/users/{member.id}/password", json={"new_password": NEW_PASSWORD}
        )
        assert response.status_code == 401

    def test_403_for_a_member_or_for_your_own(self, client, factory, admin, member):
        by_member = client.put(
            f"/v1/users/{admin.id}/password",
            json={"new_password": NEW_PASSWORD},
            headers=factory.auth(member),
        )
        own = client.put(
            f"/v1/users/{admin.id}/password",
            json={"new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert (by_member.status_code, own.status_code) == (403, 403)
        assert own.json() == {"detail": "Change your own password with POST /v1/users/me/password"}
        assert _login(client, "ada", PASSWORD).status_code == 200

    def test_404_for_a_user_of_another_account(self, client, factory, admin):
        stranger = factory.user(factory.account("globex"), Role.MEMBER)
        response = client.put(
            f"/v1/users/{stranger.id}/password",
            json={"new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert response.status_code == 404

    def test_409_for_a_member_of_other_accounts_too(self, client, factory, admin, member):
        factory.join(member, factory.account("globex"))
        response = client.put(
            f"/v1/users/{member.id}/password",
            json={"new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert response.status_code == 409
        assert _login(client, "max", PASSWORD).status_code == 200

    def test_415_for_a_form_body(self, client, factory, admin, member):
        response = client.put(
            f"/v1/users/{member.id}/password",
            data={"new_password": NEW_PASSWORD},
            headers=factory.auth(admin),
        )
        assert response.status_code == 415

    def test_422_for_a_short_password(self, client, factory, admin, member):
        response = client.put(
            f"/v1/users/{member.id}/password",
            json={"new_password": "short"},
            headers=factory.auth(admin),
        )
        assert response.status_code == 422
        assert _login(client, "max", PASSWORD).status_code == 200
