"""People, policies and the key switch, raced by real clients against a live server
with 2 workers: no 5xx, an account never loses its last admin, one password change
wins, a policy is always one whole body, a removed member's keys never come back.

Its own server: these tests change who is admin, which the other concurrency tests'
admin must not see.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tests.live import Answer, Live, live_server, run

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser


@pytest.fixture(scope="module")
def live(module_database_url):
    # The password races make many wrong-password checks: no throttle in the way.
    with live_server(module_database_url, KEYPLANE_LOGIN_MAX_FAILURES="1000") as live:
        yield live


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _together(live: Live, requests: list[tuple[str, str, dict[str, Any]]]) -> list[Answer]:
    """(method, path, kwargs) each on its own connection, all sent at once."""

    async def send() -> list[Answer]:
        async with live.async_client(len(requests)) as client:
            return await asyncio.gather(
                *(client.request(method, path, **kwargs) for method, path, kwargs in requests)
            )

    return list(run(send()))


def _roles(live: Live) -> dict[str, str]:
    with live.client() as client:
        members = client.get("/v1/users", headers=live.auth).json()["items"]
    return {m["username"]: m["role"] for m in members}


def _only_these_admins(live: Live, names: set[str]) -> None:
    """Everyone else (the fixture's admin last) becomes a member, by the fixture's admin."""
    with live.client() as client:
        for name, role in _roles(live).items():
            if role == "admin" and name not in names and name != "admin":
                demoted = client.patch(
                    f"/v1/users/{live.user_id(name)}",
                    json={"role": "member"},
                    headers=live.auth,
                )
                assert demoted.status_code == 200, demoted.text
        demoted = client.patch(
            f"/v1/users/{live.user_id('admin')}", json={"role": "member"}, headers=live.auth
        )
        assert demoted.status_code == 200, demoted.text


def _everyone_admin_again(live: Live, token: str) -> None:
    with live.client() as client:
        client.patch(
            f"/v1/users/{live.user_id('admin')}", json={"role": "admin"}, headers=_bearer(token)
        )


class TestTheLastAdmin:
    ROUNDS = 5

    def test_admins_stepping_down_at_once_leave_exactly_one(self, live):
        admins = [live.add_user("admin") for _ in range(5)]
        tokens = {name: live.sign_in(name, password) for name, password in admins}
        ids = {name: live.user_id(name) for name in tokens}
        for _ in range(self.ROUNDS):
            # The fixture's admin stands aside (it is made admin again after each round).
            _only_these_admins(live, set(tokens))
            answers = _together(
                live,
                [
                    (
                        "PATCH",
                        f"/v1/users/{ids[n]}",
                        {"json": {"role": "member"}, "headers": _bearer(t)},
                    )
                    for n, t in tokens.items()
                ],
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200] * 4 + [409], [a.text for a in answers]
            roles = _roles(live)
            remaining = [n for n in tokens if roles[n] == "admin"]
            assert len(remaining) == 1
            # The one left makes the others admin again for the next round.
            survivor = tokens[remaining[0]]
            with live.client() as client:
                for user_id in ids.values():
                    client.patch(
                        f"/v1/users/{user_id}", json={"role": "admin"}, headers=_bearer(survivor)
                    )
            _everyone_admin_again(live, survivor)
            assert all(_roles(live)[name] == "admin" for name in [*tokens, "admin"])

    def test_admins_removing_themselves_at_once_leave_exactly_one(self, live):
        admins = [live.add_user("admin") for _ in range(5)]
        tokens = {name: live.sign_in(name, password) for name, password in admins}
        ids = {name: live.user_id(name) for name in tokens}
        _only_these_admins(live, set(tokens))
        answers = _together(
            live,
            [("DELETE", f"/v1/users/{ids[n]}", {"headers": _bearer(t)}) for n, t in tokens.items()],
        )
        assert sorted(a.status_code for a in answers) == [204] * 4 + [409], [
            a.text for a in answers
        ]
        roles = _roles(live)
        survivors = [n for n in tokens if n in roles]
        assert len(survivors) == 1 and roles[survivors[0]] == "admin"
        _everyone_admin_again(live, tokens[survivors[0]])
        assert _roles(live)["admin"] == "admin"


class TestPasswordChanges:
    def test_one_of_many_concurrent_changes_wins(self, live):
        username, password = live.add_user("member")
        tokens = [live.sign_in(username, password) for _ in range(6)]
        answers = _together(
            live,
            [
                (
                    "POST",
                    "/v1/users/me/password",
                    {
                        "json": {"current_password": password, "new_password": f"new-password-{i}"},
                        "headers": _bearer(token),
                    },
                )
                for i, token in enumerate(tokens)
            ],
        )
        statuses = [a.status_code for a in answers]
        assert statuses.count(200) == 1, [a.text for a in answers]
        # A loser's token may end before it is read (401), or its check may meet the
        # winner's new password (403), or its write find the password changed (409).
        assert set(statuses) <= {200, 401, 403, 409}, [a.text for a in answers]
        winner = statuses.index(200)
        assert live.login(username, f"new-password-{winner}").status_code == 200
        for i in range(len(tokens)):
            if i != winner:
                assert live.login(username, f"new-password-{i}").status_code == 400
        assert live.login(username, password).status_code == 400
        with live.client() as client:
            for token in tokens:
                assert client.get("/v1/users/me", headers=_bearer(token)).status_code == 401
            new_token = answers[winner].json()["access_token"]
            assert client.get("/v1/users/me", headers=_bearer(new_token)).status_code == 200

    def test_concurrent_admin_resets_leave_exactly_one_password(self, live):
        username, password = live.add_user("member")
        member_token = live.sign_in(username, password)
        user_id = live.user_id(username)
        answers = _together(
            live,
            [
                (
                    "PUT",
                    f"/v1/users/{user_id}/password",
                    {"json": {"new_password": f"reset-password-{i}"}, "headers": live.auth},
                )
                for i in range(6)
            ],
        )
        assert [a.status_code for a in answers] == [204] * 6, [a.text for a in answers]
        works = [
            i for i in range(6) if live.login(username, f"reset-password-{i}").status_code == 200
        ]
        assert len(works) == 1
        assert live.login(username, password).status_code == 400
        with live.client() as client:
            assert client.get("/v1/users/me", headers=_bearer(member_token)).status_code == 401


class TestPolicies:
    def test_concurrent_puts_leave_exactly_one_whole_policy(self, live):
        bodies = [
            {
                "max_key_lifetime_seconds": 86400 * (i + 1),
                "expiry_required": i % 2 == 0,
                "member_permissions": ["perm0", "perm1", "perm2"][: i % 4],
                "on_leak": ["revoke", "disable"][i % 2],
            }
            for i in range(16)
        ]
        answers = _together(
            live,
            [
                ("PUT", "/v1/account/policy", {"json": body, "headers": live.auth})
                for body in bodies
            ],
        )
        assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers][:3]
        with live.client() as client:
            final = client.get("/v1/account/policy", headers=live.auth).json()
            assert final in bodies
            client.put("/v1/account/policy", json={}, headers=live.auth)

    def test_concurrent_patches_of_different_fields_all_land_in_an_unbroken_chain(self, live):
        """Each PATCH applies to the policy the one before it left: of 48 at once, three
        fields each, every field ends as one of its own PATCHes set it, and the audit
        trail's from/to pairs chain without a gap."""
        lifetimes = [86400 * (i + 1) for i in range(16)]
        bodies = [{"max_key_lifetime_seconds": days} for days in lifetimes]
        bodies += [{"on_leak": "disable"}] * 16
        bodies += [{"member_permissions": ["perm0", "perm1"][: 1 + i % 2]} for i in range(16)]
        answers = _together(
            live,
            [("PATCH", "/v1/account/policy", {"json": b, "headers": live.auth}) for b in bodies],
        )
        assert [a.status_code for a in answers] == [200] * 48, [a.text for a in answers][:3]
        with live.client() as client:
            final = client.get("/v1/account/policy", headers=live.auth).json()
            events = client.get(
                "/v1/audit-events",
                params={"action": "policy.updated", "limit": 100},
                headers=live.auth,
            ).json()["items"]
            client.put("/v1/account/policy", json={}, headers=live.auth)
        assert final["on_leak"] == "disable" and final["expiry_required"] is False
        assert final["max_key_lifetime_seconds"] in lifetimes
        assert final["member_permissions"] in (["perm0"], ["perm0", "perm1"])
        for field in ("max_key_lifetime_seconds", "on_leak", "member_permissions"):
            changes = [e["changes"][field] for e in reversed(events) if field in e["changes"]]
            assert changes, field
            for before, after in itertools.pairwise(changes):
                assert after["from"] == before["to"], (field, before, after)
            assert changes[-1]["to"] == final[field]


class TestRemovalAgainstTheSwitch:
    def test_keys_turned_on_while_their_owner_is_removed_end_disabled(self, live):
        for _ in range(3):
            username, password = live.add_user("member")
            member_token = live.sign_in(username, password)
            keys = []
            with live.client() as client:
                for _ in range(8):
                    made = client.post("/v1/api-keys", json={}, headers=_bearer(member_token))
                    assert made.status_code == 201, made.text
                    keys.append(made.json())
                    client.patch(
                        f"/v1/api-keys/{keys[-1]['id']}", json={"enabled": False}, headers=live.auth
                    )
            member_id = live.user_id(username)
            switches = [
                (
                    "PATCH",
                    f"/v1/api-keys/{k['id']}",
                    {"json": {"enabled": True}, "headers": live.auth},
                )
                for k in keys
            ]
            removal = ("DELETE", f"/v1/users/{member_id}", {"headers": live.auth})
            creates = [
                ("POST", "/v1/api-keys", {"json": {}, "headers": _bearer(member_token)})
                for _ in range(4)
            ]
            # An admin's keys for the member race the removal too.
            for_them = {"json": {"user_id": member_id}, "headers": live.auth}
            creates += [("POST", "/v1/api-keys", for_them) for _ in range(4)]
            answers = _together(live, [*switches[:4], removal, *creates, *switches[4:]])
            statuses = [a.status_code for a in answers]
            assert statuses[4] == 204, answers[4].text
            assert set(statuses[:4] + statuses[13:]) <= {200, 409}, [a.text for a in answers]
            # The member's own creates race their removal: made before it, or refused;
            # so do the admin's for them (refused: no longer a member, 422).
            assert set(statuses[5:9]) <= {201, 401, 403}, [a.text for a in answers]
            assert set(statuses[9:13]) <= {201, 422}, [a.text for a in answers]
            keys += [a.json() for a in answers[5:13] if a.status_code == 201]
            for key in keys:
                assert live.verify(key["full_key"])["code"] == "DISABLED"
                assert live.get_key(key["id"])["status"] == "disabled"
