"""Authority is checked when a change is made, not when its headers arrived.

A client may send a request's headers, wait, and send its body up to
``KEYPLANE_BODY_TIMEOUT_SECONDS`` later. These tests do exactly that over real sockets
to a live server with 2 workers: the headers of every management write go out first,
then the caller is demoted, removed, deactivated or has their password changed (and
that change commits), then the bodies follow. Every held request must answer as a
fresh request would now (403 or 401, in its surface's shape) and change nothing.

The JSON body is read before the credentials are checked, in FastAPI's order, so a held
request is judged as a fresh one by the time its body is in; what may still happen
between that check and the commit is caught by the transaction's own check
(``db.authority``), shown in-process by ``tests/handlers/test_authority.py``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.live import PASSWORD, Live, live_server
from tests.servers import KEYPLANE

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

# Authentication runs as soon as the headers arrive; this is long enough for it.
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class HeldRequest:
    """A request whose headers are sent at once and whose body only on ``finish``."""

    def __init__(
        self, base: str, method: str, path: str, headers: dict[str, str], body: Any
    ) -> None:
        url = urlsplit(base)
        self.payload = json.dumps(body).encode()
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        self.connection.putrequest(method, path)
        self.connection.putheader("Content-Type", "application/json")
        self.connection.putheader("Content-Length", str(len(self.payload)))
        for name, value in headers.items():
            self.connection.putheader(name, value)
        self.connection.endheaders()  # the headers, and not a byte of the body
        self.label = f"{method} {path}"

    def finish(self) -> Reply:
        self.connection.send(self.payload)
        response = self.connection.getresponse()
        raw = response.read()
        self.connection.close()
        return Reply(response.status, json.loads(raw) if raw else None, dict(response.headers))


@pytest.fixture(scope="module")
def live(module_database_url):
    with live_server(module_database_url) as live:
        yield live


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _events_by(live: Live, user_id: int) -> list[dict[str, Any]]:
    with live.client() as client:
        response = client.get(
            "/v1/audit-events", params={"actor": f"user:{user_id}", "limit": 200}, headers=live.auth
        )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _state(live: Live) -> dict[str, Any]:
    """Everything the held writes could have changed, as the fixture's admin sees it."""
    with live.client() as client:
        get = lambda path: client.get(path, headers=live.auth).json()  # noqa: E731
        return {
            "members": {m["username"]: m["role"] for m in get("/v1/users")["items"]},
            "policy": get("/v1/account/policy"),
            "catalog": sorted(p["id"] for p in get("/v1/permissions")["items"]),
            "keys": {
                k["id"]: (k["description"], k["key_prefix"], k["enabled"], k["expires_at"])
                for k in get("/v1/api-keys?limit=100")["items"]
            },
        }


def _hold_admin_writes(live: Live, token: str, *, target_id: int, key_id: int) -> list[HeldRequest]:
    """Every management write with a body that an admin may make, on both surfaces."""
    auth = _bearer(token)

    def hold(method: str, path: str, body: Any) -> HeldRequest:
        return HeldRequest(live.base, method, path, auth, body)

    return [
        # v1: people, policy, catalog, keys.
        hold("POST", "/v1/users", {"username": "backdoor", "password": "backdoor-password"}),
        hold("PATCH", f"/v1/users/{target_id}", {"role": "admin"}),
        hold("PUT", f"/v1/users/{target_id}/password", {"new_password": "taken-over-password"}),
        hold("PUT", "/v1/account/policy", {"expiry_required": True}),
        hold("POST", "/v1/permissions", {"id": "heldPermission"}),
        hold("POST", "/v1/api-keys", {"description": "held create"}),
        hold("PATCH", f"/v1/api-keys/{key_id}", {"description": "held change"}),
        hold("POST", f"/v1/api-keys/{key_id}/rotate", {"grace_period_seconds": 0}),
        # The account console (the console contract).
        hold("POST", "/apikeys", {"description": "held console create", "flatPermissionsList": []}),
        hold(
            "PATCH",
            f"/apikeys/{key_id}",
            {"description": "held console change", "flatPermissionsList": []},
        ),
    ]


def _finish_all(held: list[HeldRequest]) -> dict[str, Reply]:
    return {request.label: request.finish() for request in held}


def _assert_refused(replies: dict[str, Reply], status: int) -> None:
    wrong = {label: (r.status, r.body) for label, r in replies.items() if r.status != status}
    assert not wrong, wrong
    for label, reply in replies.items():
        path = label.split(" ", 1)[1]
        if path.startswith("/apikeys"):
            assert set(reply.body) == {"error"}, reply.body
        else:
            assert isinstance(reply.body["detail"], str), reply.body
        if status == 401:
            assert reply.headers.get("www-authenticate") == "Bearer", label


class _Scene:
    """An admin ``actor`` (besides the fixture's), a member, and a key of the member's."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.actor, _ = live.add_user("admin")
        self.member, _ = live.add_user("member")
        self.actor_id = live.user_id(self.actor)
        self.member_id = live.user_id(self.member)
        self.token = live.sign_in(self.actor)
        member_token = live.sign_in(self.member)
        with live.client() as client:
            made = client.post("/v1/api-keys", json={}, headers=_bearer(member_token))
        assert made.status_code == 201, made.text
        self.key_id = made.json()["id"]

    def hold(self) -> list[HeldRequest]:
        held = _hold_admin_writes(
            self.live, self.token, target_id=self.member_id, key_id=self.key_id
        )
        time.sleep(SETTLE_SECONDS)
        return held


def _change_own_password(live: Live, username: str) -> None:
    other_token = live.sign_in(username)
    with live.client() as client:
        changed = client.post(
            "/v1/users/me/password",
            json={"current_password": PASSWORD, "new_password": "a-brand-new-password"},
            headers=_bearer(other_token),
        )
    assert changed.status_code == 200, changed.text


def _operator(live: Live, *args: str) -> None:
    done = subprocess.run(
        [*KEYPLANE, *args], env=live.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


class TestAnAdminsHeldWrites:
    """Headers sent as an admin; the body after the admin lost that standing."""

    def test_demoted_admin_is_refused_403_and_changes_nothing(self, live):
        scene = _Scene(live)
        before_events = _events_by(live, scene.actor_id)
        held = scene.hold()
        with live.client() as client:
            demoted = client.patch(
                f"/v1/users/{scene.actor_id}", json={"role": "member"}, headers=live.auth
            )
        assert demoted.status_code == 200, demoted.text
        before = _state(live)
        replies = _finish_all(held)
        # As a member now: their own new key is theirs to make, another's key is not
        # theirs to see (404); every admin's write is refused.
        member_may = {
            "POST /v1/api-keys": 201,
            f"PATCH /v1/api-keys/{scene.key_id}": 404,
            f"POST /v1/api-keys/{scene.key_id}/rotate": 404,
        }
        assert {label: replies.pop(label).status for label in member_may} == member_may
        _assert_refused(replies, 403)
        after = _state(live)
        made = set(after["keys"]) - set(before["keys"])
        assert len(made) == 1 and after["keys"][made.pop()][0] == "held create"
        assert {k: after["keys"][k] for k in before["keys"]} == before["keys"]
        assert {k: v for k, v in after.items() if k != "keys"} == {
            k: v for k, v in before.items() if k != "keys"
        }
        assert after["members"][scene.actor] == "member"
        assert [e["action"] for e in _events_by(live, scene.actor_id)] == [
            "key.created",
            *[e["action"] for e in before_events],
        ]

    def test_removed_admin_is_refused_403_and_changes_nothing(self, live):
        scene = _Scene(live)
        before_events = _events_by(live, scene.actor_id)
        held = scene.hold()
        with live.client() as client:
            removed = client.delete(f"/v1/users/{scene.actor_id}", headers=live.auth)
        assert removed.status_code == 204, removed.text
        before = _state(live)
        _assert_refused(_finish_all(held), 403)
        assert _state(live) == before
        assert scene.actor not in _state(live)["members"]
        assert not [name for name in before["members"] if name.startswith("backdoor")]
        assert _events_by(live, scene.actor_id) == before_events

    def test_deactivated_admin_is_refused_401_and_changes_nothing(self, live):
        scene = _Scene(live)
        before_events = _events_by(live, scene.actor_id)
        held = scene.hold()
        _operator(live, "users", "deactivate", scene.actor)
        before = _state(live)
        _assert_refused(_finish_all(held), 401)
        assert _state(live) == before
        # The trail ends with the deactivation: nothing by the user after it.
        assert _events_by(live, scene.actor_id) == before_events
        _operator(live, "users", "activate", scene.actor)

    def test_admin_whose_password_changed_is_refused_401_and_changes_nothing(self, live):
        scene = _Scene(live)
        held = scene.hold()
        _change_own_password(live, scene.actor)
        before_events = _events_by(live, scene.actor_id)
        before = _state(live)
        _assert_refused(_finish_all(held), 401)
        assert _state(live) == before
        assert _events_by(live, scene.actor_id) == before_events


class TestAMembersHeldKeyWrites:
    """A member's writes to their own keys, held while they are removed."""

    def test_removed_member_is_refused_403_and_their_keys_stay_off(self, live):
        username, _ = live.add_user("member")
        member_id = live.user_id(username)
        token = live.sign_in(username)
        with live.client() as client:
            made = client.post("/v1/api-keys", json={}, headers=_bearer(token))
            assert made.status_code == 201, made.text
            key = made.json()
            off = client.patch(
                f"/v1/api-keys/{key['id']}", json={"enabled": False}, headers=_bearer(token)
            )
            assert off.status_code == 200, off.text
        auth = _bearer(token)
        held = [
            HeldRequest(live.base, "PATCH", f"/v1/api-keys/{key['id']}", auth, {"enabled": True}),
            HeldRequest(live.base, "POST", f"/v1/api-keys/{key['id']}/rotate", auth, {}),
            HeldRequest(live.base, "POST", "/v1/api-keys", auth, {"description": "held"}),
            HeldRequest(
                live.base,
                "POST",
                "/v1/users/me/password",
                auth,
                {"current_password": PASSWORD, "new_password": "held-new-password"},
            ),
        ]
        time.sleep(SETTLE_SECONDS)
        keys_before = _state(live)["keys"]
        with live.client() as client:
            removed = client.delete(f"/v1/users/{member_id}", headers=live.auth)
        assert removed.status_code == 204, removed.text
        replies = _finish_all(held)
        # The password is the user's own, not the account's: that change goes through.
        password = replies.pop("POST /v1/users/me/password")
        assert password.status == 200, password.body
        assert live.login(username, "held-new-password").status_code == 200
        _assert_refused(replies, 403)
        assert _state(live)["keys"] == keys_before
        assert live.verify(key["full_key"])["code"] == "DISABLED"
        assert live.get_key(key["id"])["status"] == "disabled"
