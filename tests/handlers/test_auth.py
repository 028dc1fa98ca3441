"""``POST /v1/auth/token``: the OAuth2 password grant."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from keyplane.app import create_app
from keyplane.db.models import AuditEvent, LoginThrottle, Role, User
from tests.factories import PASSWORD


@pytest.fixture
def alice(factory):
    return factory.user(factory.account(), Role.ADMIN, username="alice")


def _login(client, username: str, password: str, **extra: str):
    return client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password, **extra},
    )


class TestToken:
    def test_200_issues_a_bearer_token_that_works(self, client, alice):
        response = _login(client, "alice", PASSWORD)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 3600
        assert response.headers["Cache-Control"] == "no-store"
        me = client.get("/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
        assert me.status_code == 200
        assert me.json()["username"] == "alice"

    def test_200_in_any_case_and_unicode_form_but_not_as_a_look_alike(self, client, alice):
        for typed in ("alice", "ALICE", "Alice", "\uff41\uff4c\uff49\uff43\uff45"):  # full-width
            response = _login(client, typed, PASSWORD)
            assert response.status_code == 200, typed
            me = client.get(
                "/v1/users/me",
                headers={"Authorization": f"Bearer {response.json()['access_token']}"},
            )
            assert me.json()["id"] == alice.id
        for look_alike in ("aIice", "al1ce", "alice."):
            assert _login(client, look_alike, PASSWORD).status_code == 400, look_alike

    def test_400_is_identical_for_an_unknown_user_and_a_wrong_password(self, client, alice):
        wrong_password = _login(client, "alice", "not-the-password")
        unknown_user = _login(client, "mallory", "not-the-password")
        assert wrong_password.status_code == unknown_user.status_code == 400
        assert (
            wrong_password.json()
            == unknown_user.json()
            == {
                "error": "invalid_grant",
                "error_description": "Incorrect username or password",
            }
        )

    def test_400_for_a_grant_type_other_than_password(self, client, alice):
        response = _login(client, "alice", PASSWORD, grant_type="client_credentials")
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"

    def test_400_for_a_disabled_user_whose_tokens_stop_working(
        self, client, factory, sessions, alice
    ):
        token = factory.token(alice)
        with sessions() as session, session.begin():
            session.execute(update(User).where(User.id == alice.id).values(is_active=False))
        assert _login(client, "alice", PASSWORD).json()["error"] == "invalid_grant"
        response = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401

    def test_401_for_an_expired_or_forged_token(self, client, factory, alice):
        expired = factory.secrets.issue_user_token(
            alice.id, timedelta(minutes=5), now=datetime.now(UTC) - timedelta(hours=1)
        )
        forged = factory.secrets.issue_user_token(alice.id, timedelta(hours=1))[:-4] + "AAAA"
        for token in (expired, forged):
            response = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"

    def test_415_for_a_json_body(self, client, alice):
        response = client.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": "alice", "password": PASSWORD},
        )
        assert response.status_code == 415

    def test_422_lists_the_missing_fields(self, client):
        response = client.post("/v1/auth/token", data={"grant_type": "password"})
        assert response.status_code == 422
        assert response.json() == {
            "detail": [
                {"loc": ["body", "username"], "msg": "Field required", "type": "missing"},
                {"loc": ["body", "password"], "msg": "Field required", "type": "missing"},
            ]
        }

    # The throttle: after 10 failures in 15 minutes (the defaults), a username gets 429s.

    def _fail(self, client, username):
        return _login(client, username, "wrong-password")

    def test_429_with_retry_after_alike_for_known_and_unknown_usernames(self, client, alice):
        answers = {}
        for username in ("alice", "nobody-by-this-name"):
            for _ in range(10):
                assert self._fail(client, username).status_code == 400
            answers[username] = _login(client, username, PASSWORD)
        known, unknown = answers["alice"], answers["nobody-by-this-name"]
        assert known.status_code == unknown.status_code == 429
        assert (
            known.json()
            == unknown.json()
            == {"detail": "Too many failed logins for this username; try again later"}
        )
        for response in (known, unknown):
            assert 890 <= int(response.headers["Retry-After"]) <= 900

    def test_every_case_of_a_name_counts_against_one_throttle(self, client, alice):
        for typed in ("alice", "ALICE") * 5:
            assert self._fail(client, typed).status_code == 400
        assert _login(client, "Alice", PASSWORD).status_code == 429

    def test_other_usernames_are_unaffected(self, client, factory, alice):
        bob = factory.user(factory.account(), Role.MEMBER, username="bob")
        for _ in range(10):
            self._fail(client, "alice")
        assert _login(client, "alice", PASSWORD).status_code == 429
        assert _login(client, bob.username, PASSWORD).status_code == 200

    def test_a_login_after_the_window_works_again(self, client, sessions, alice):
        for _ in range(10):
            self._fail(client, "alice")
        assert _login(client, "alice", PASSWORD).status_code == 429
        with sessions() as session, session.begin():
            session.execute(
                update(LoginThrottle).values(
                    window_started_at=datetime.now(UTC) - timedelta(minutes=16)
                )
            )
        assert _login(client, "alice", PASSWORD).status_code == 200

    def test_windows_that_ended_are_purged_and_usernames_never_stored(
        self, client, sessions, alice
    ):
        self._fail(client, "alice")
        self._fail(client, "my-password-typed-as-a-name")
        with sessions() as session, session.begin():
            rows = session.scalars(select(LoginThrottle)).all()
            assert len(rows) == 3  # two usernames and the one client address, all hashed
            typed = {"alice", "my-password-typed-as-a-name", "testclient"}
            assert not typed & {r.subject for r in rows}
            events = session.scalars(select(AuditEvent)).all()
            assert "my-password-typed-as-a-name" not in repr(
                [(e.target_id, e.changes) for e in events]
            )
            session.execute(
                update(LoginThrottle).values(
                    window_started_at=datetime.now(UTC) - timedelta(minutes=16)
                )
            )
        self._fail(client, "someone-else")
        with sessions() as session:
            assert len(session.scalars(select(LoginThrottle)).all()) == 2  # name and address

    def test_a_failed_login_names_the_user_as_target_not_actor(self, client, sessions, alice):
        self._fail(client, "alice")
        _login(client, "alice", PASSWORD)
        with sessions() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action.like("login.%")).order_by(AuditEvent.id)
            ).all()
        assert [
            (e.action, e.actor_type, e.actor_id, e.target_type, e.target_id) for e in events
        ] == [
            ("login.failed", "anonymous", None, "user", str(alice.id)),
            ("login.succeeded", "user", alice.id, "user", str(alice.id)),
        ]


@pytest.fixture
def three_per_address(settings, engine):
    """The service with a limit of 3 failed logins per client address."""
    app = create_app(replace(settings, login_max_failures_per_address=3))
    with app.test_client() as client:
        app.service.sender.stop()
        yield client


class TestThrottlePerAddress:
    def test_429_for_guesses_across_usernames_from_one_address(self, three_per_address, alice):
        client = three_per_address
        for username in ("alice", "bob", "carol"):  # one guess each: no username's limit
            assert _login(client, username, "wrong-password").status_code == 400
        refused = _login(client, "alice", PASSWORD)
        assert refused.status_code == 429
        assert refused.json() == {
            "detail": "Too many failed logins from this address; try again later"
        }
        assert 890 <= int(refused.headers["Retry-After"]) <= 900

    def test_a_success_does_not_clear_the_address_count(self, three_per_address, alice):
        """Signing in to an account of one's own buys no more guesses at others."""
        client = three_per_address
        for username in ("bob", "carol"):
            assert _login(client, username, "wrong-password").status_code == 400
        assert _login(client, "alice", PASSWORD).status_code == 200
        assert _login(client, "dave", "wrong-password").status_code == 400
        refused = _login(client, "alice", PASSWORD)
        assert refused.status_code == 429
        assert "from this address" in refused.json()["detail"]

    def test_successes_alone_never_reach_the_limit(self, three_per_address, alice):
        for _ in range(5):
            assert _login(three_per_address, "alice", PASSWORD).status_code == 200
