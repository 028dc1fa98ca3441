"""Authority at the moment of the write (``db.authority``): whatever changes between
the check of a request's credentials and its commit, the commit sees.

Each test lets the request be authenticated and its caller resolved as they stood,
then changes that standing and commits the change (as a concurrent request would),
then lets the handler write. The write must be refused as a fresh request would be
refused now, and nothing of it committed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyplane import db
from keyplane.db import audit
from keyplane.db.models import Role, User
from keyplane.handlers import context


@pytest.fixture
def meanwhile(monkeypatch):
    """Run ``change`` once the caller is resolved, before the handler writes."""
    changes = []

    def install(change):
        changes.append(change)
        resolve = context.current_actor

        def resolved_then_changed():
            actor = resolve()
            if changes:
                changes.pop()()
            return actor

        for module in (
            "keyplane.handlers.api_keys",
            "keyplane.handlers.console_keys",
            "keyplane.handlers.account",
        ):
            monkeypatch.setattr(f"{module}.current_actor", resolved_then_changed)

    return install


def _in_a_session(factory, work):
    with factory.sessions() as session, session.begin():
        work(session)


class TestAuthorityAtTheWrite:
    def test_403_for_an_admin_demoted_before_the_write(
        self, client, factory, meanwhile, acme, admin
    ):
        other = factory.user(acme, Role.ADMIN)
        meanwhile(
            lambda: _in_a_session(
                factory,
                lambda s: db.accounts.set_role(
                    s, acme.id, admin.id, Role.MEMBER, actor=audit.OPERATOR, now=datetime.now(UTC)
                ),
            )
        )
        response = client.put(
            "/v1/account/policy", json={"expiry_required": True}, headers=factory.auth(admin)
        )
        assert response.status_code == 403
        assert response.json() == {"detail": "You are no longer an admin of this account"}
        policy = client.get("/v1/account/policy", headers=factory.auth(other)).json()
        assert policy["expiry_required"] is False

    def test_403_on_the_console_for_an_admin_removed_before_the_write(
        self, client, factory, meanwhile, acme, admin
    ):
        factory.user(acme, Role.ADMIN)
        meanwhile(
            lambda: _in_a_session(
                factory,
                lambda s: db.accounts.remove_member(
                    s, acme.id, admin.id, actor=audit.OPERATOR, now=datetime.now(UTC)
                ),
            )
        )
        body = {"description": "made by the removed", "flatPermissionsList": []}
        response = client.post("/apikeys", json=body, headers=factory.auth(admin))
        assert response.status_code == 403
        assert response.json() == {"error": "You are no longer a member of this account"}
        assert factory.count_keys() == 0

    def test_401_for_a_member_whose_password_changed_before_the_write(
        self, client, factory, meanwhile, acme, member
    ):
        meanwhile(
            lambda: _in_a_session(
                factory,
                lambda s: db.users.set_password(
                    s,
                    member.id,
                    "new-hash",
                    actor=audit.OPERATOR,
                    action="user.password_reset",
                    now=datetime.now(UTC),
                ),
            )
        )
        response = client.post("/v1/api-keys", json={}, headers=factory.auth(member))
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert factory.count_keys() == 0

    def test_401_for_a_member_deactivated_before_the_write(
        self, client, factory, meanwhile, acme, member
    ):
        key, _ = factory.api_key(member, acme)

        def deactivate(session):
            db.accounts.set_user_active(
                session, session.get(User, member.id), False, now=datetime.now(UTC)
            )

        meanwhile(lambda: _in_a_session(factory, deactivate))
        response = client.patch(
            f"/v1/api-keys/{key.id}", json={"description": "renamed"}, headers=factory.auth(member)
        )
        assert response.status_code == 401
        assert factory.stored_key(key.id).description == "a key"
