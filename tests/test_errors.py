"""Errors outside any one operation: 500s, 503s, 404/405 on unknown routes, broken bodies."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import Connection

from keyplane.app import create_app
from keyplane.db.models import Role
from keyplane.settings import Settings
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD
from tests.servers import free_port
from tests.test_spec import _operations


def _request_for(operation_id: str, key_id: int, full_key: str) -> tuple[str, str, dict]:
    """A valid request for each operation (kept beside the spec by the test below)."""
    return {
        "auth.token": (
            "POST",
            "/v1/auth/token",
            {"data": {"grant_type": "password", "username": "u", "password": PASSWORD}},
        ),
        "users.me": ("GET", "/v1/users/me", {}),
        "users.list": ("GET", "/v1/users", {}),
        "users.create": ("POST", "/v1/users", {"json": {"username": "n1", "password": PASSWORD}}),
        "users.change_password": (
            "POST",
            "/v1/users/me/password",
            {"json": {"current_password": PASSWORD, "new_password": "another-password"}},
        ),
        # Any member id will do: the database fails before it is looked up.
        "users.update": ("PATCH", f"/v1/users/{key_id}", {"json": {"role": "admin"}}),
        "users.remove": ("DELETE", f"/v1/users/{key_id}", {}),
        "users.reset_password": (
            "PUT",
            f"/v1/users/{key_id}/password",
            {"json": {"new_password": "another-password"}},
        ),
        "account.get_policy": ("GET", "/v1/account/policy", {}),
        "account.put_policy": ("PUT", "/v1/account/policy", {"json": {"expiry_required": True}}),
        "account.patch_policy": ("PATCH", "/v1/account/policy", {"json": {"on_leak": "disable"}}),
        "api_keys.list": ("GET", "/v1/api-keys", {}),
        "api_keys.create": ("POST", "/v1/api-keys", {"json": {}}),
        "api_keys.get": ("GET", f"/v1/api-keys/{key_id}", {}),
        "api_keys.update": ("PATCH", f"/v1/api-keys/{key_id}", {"json": {"description": "x"}}),
        "api_keys.revoke": ("DELETE", f"/v1/api-keys/{key_id}", {}),
        "permissions.list": ("GET", "/v1/permissions", {}),
        "permissions.create": ("POST", "/v1/permissions", {"json": {"id": "readBilling"}}),
        "permissions.delete": ("DELETE", "/v1/permissions/readApplications", {}),
        "console_keys.list": ("GET", "/apikeys", {}),
        "console_keys.create": ("POST", "/apikeys", {"json": CONSOLE_BODY}),
        "console_keys.get": ("GET", f"/apikeys/{key_id}", {}),
        "console_keys.update": ("PATCH", f"/apikeys/{key_id}", {"json": CONSOLE_BODY}),
        "console_keys.revoke": ("DELETE", f"/apikeys/{key_id}", {}),
        "api_keys.rotate": ("POST", f"/v1/api-keys/{key_id}/rotate", {"json": {}}),
        "keys.verify": ("POST", "/v1/keys/verify", {"json": {"key": full_key}}),
        "audit_events.list": ("GET", "/v1/audit-events", {}),
        "usage.list": ("GET", "/v1/usage", {}),
        "usage.of_key": ("GET", f"/v1/api-keys/{key_id}/usage", {}),
        "api_keys.credits": (
            "POST",
            f"/v1/api-keys/{key_id}/credits",
            {"json": {"op": "increment", "value": 1}},
        ),
        "identities.list": ("GET", "/v1/identities", {}),
        "identities.get": ("GET", "/v1/identities/cus_1", {}),
        "identities.put": ("PUT", "/v1/identities/cus_1", {"json": {"meta": {"plan": "pro"}}}),
        "identities.update": ("PATCH", "/v1/identities/cus_1", {"json": {"meta": None}}),
        "identities.delete": ("DELETE", "/v1/identities/cus_1", {}),
        "ratelimits.limit": (
            "POST",
            "/v1/ratelimit",
            {"json": {"namespace": "s", "identifier": "ip", "limit": 1, "duration_ms": 1000}},
        ),
        "ratelimits.put_override": (
            "PUT",
            "/v1/ratelimit/s/overrides/ip",
            {"json": {"limit": 1, "duration_ms": 1000}},
        ),
        "ratelimits.delete_override": ("DELETE", "/v1/ratelimit/s/overrides/ip", {}),
        # Any webhook id will do: the database fails before it is looked up.
        "webhooks.list": ("GET", "/v1/webhooks", {}),
        "webhooks.create": ("POST", "/v1/webhooks", {"json": {"url": "https://a.example"}}),
        "webhooks.get": ("GET", f"/v1/webhooks/{key_id}", {}),
        "webhooks.update": ("PATCH", f"/v1/webhooks/{key_id}", {"json": {"enabled": False}}),
        "webhooks.delete": ("DELETE", f"/v1/webhooks/{key_id}", {}),
        "webhooks.rotate_secret": ("POST", f"/v1/webhooks/{key_id}/rotate-secret", {}),
        "webhooks.deliveries": ("GET", f"/v1/webhooks/{key_id}/deliveries", {}),
        "webhooks.retry": ("POST", f"/v1/webhooks/{key_id}/deliveries/1/retry", {}),
    }[operation_id]


CONSOLE_BODY = {"description": "string", "flatPermissionsList": ["readApplications"]}


# Exceptions by design: /healthz and /metrics never touch the database, and /readyz
# answers its failure as a 503 of its own (tests/handlers/test_health.py).
WITHOUT_DATABASE = {"health.live", "health.ready", "metrics.get"}
# Leak reports reach the database only with a credential these apps are not given (a
# signature under a configured GitHub key, KEYPLANE_LEAK_REPORT_TOKEN): their answers to
# a failing database are shown in tests/handlers/test_leaks.py.
WITHOUT_DATABASE |= {"leaks.github", "leaks.report"}
WITH_DATABASE = [
    op["operationId"] for _, _, op in _operations() if op["operationId"] not in WITHOUT_DATABASE
]


def _shape(path: str, console: str, v1: str) -> dict:
    return {"error": console} if path.startswith("/apikeys") else {"detail": v1}


@pytest.mark.parametrize("operation_id", WITH_DATABASE)
def test_500_for_an_unexpected_error_mid_request(
    app, client, factory, monkeypatch, caplog, operation_id
):
    account = factory.account()
    admin = factory.user(account, Role.ADMIN)
    key, full_key = factory.api_key(admin, account)
    method, path, kwargs = _request_for(operation_id, key.id, full_key)

    def bug(*args, **kwargs):
        raise RuntimeError("a bug, with a secret in its message")

    monkeypatch.setattr(Connection, "execute", bug)
    monkeypatch.setattr(type(app.service.runtime.lookups), "_fetch", bug)
    with caplog.at_level(logging.ERROR, logger="keyplane.errors"):
        response = client.request(method, path, headers=factory.auth(admin), **kwargs)
    assert response.status_code == 500
    assert response.json() == _shape(path, "Internal server error", "Internal Server Error")
    assert "Traceback" not in response.text and "secret" not in response.text
    assert any("a bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.fixture(scope="module")
def app_without_database(db_kind, tmp_path_factory):
    """The service pointed at a database that is not there (no such server, no such dir)."""
    if db_kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('gone') / 'no-such-dir' / 'keyplane.db'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone"
    app = create_app(Settings(database_url=url, secret_key=TEST_SECRET, validate_responses=True))
    with app.test_client() as client:
        yield client


@pytest.mark.parametrize("operation_id", WITH_DATABASE)
def test_503_with_retry_after_when_the_database_is_unavailable(
    app_without_database, factory, operation_id
):
    account = factory.account()
    admin = factory.user(account, Role.ADMIN)
    key, full_key = factory.api_key(admin, account)
    method, path, kwargs = _request_for(operation_id, key.id, full_key)
    started = time.monotonic()
    response = app_without_database.request(method, path, headers=factory.auth(admin), **kwargs)
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.json() == _shape(
        path,
        "The database is unavailable or busy; try again shortly",
        "The database is unavailable or busy; try again shortly",
    )


def test_405_lists_the_methods_the_spec_declares(client):
    response = client.put("/v1/api-keys/1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, PATCH"
    assert response.json() == {"detail": "Method Not Allowed"}


def test_404_for_an_unknown_path(client):
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("content", "loc"),
    [(b"\xff\xfe{}", ["body"]), (b'{"description": ', ["body", 16]), (b"[1, 2]", ["body"])],
)
def test_422_for_a_body_that_is_not_a_json_object(client, factory, content, loc):
    admin = factory.user(factory.account(), Role.ADMIN)
    before = factory.count_keys()
    response = client.post(
        "/v1/api-keys",
        content=content,
        headers={**factory.auth(admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert factory.count_keys() == before


def test_an_unknown_query_parameter_is_ignored_on_v1_and_refused_on_the_console(client, factory):
    admin = factory.user(factory.account(), Role.ADMIN)
    v1 = client.get("/v1/api-keys", params={"page": 2}, headers=factory.auth(admin))
    assert (v1.status_code, v1.json()) == (200, {"items": [], "next_cursor": None})
    console = client.get("/apikeys", params={"page": 2}, headers=factory.auth(admin))
    assert console.status_code == 400
    assert console.json() == {"error": "page: Extra inputs are not permitted"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/apikeys/a%0A", {"error": "API key not found"}),
        ("PATCH", "/apikeys/%C3%B2%0A%1F", {"error": "API key not found"}),
        # Routed by plain segments now: refused by the parameter's pattern, unreached.
        ("DELETE", "/v1/permissions/abc%0A", None),
    ],
)
def test_a_path_connexion_does_not_route_never_reaches_a_handler(
    client, factory, monkeypatch, method, path, body
):
    """Found by Schemathesis: Flask's router took paths Connexion's refused."""
    admin = factory.user(factory.account(), Role.ADMIN)
    reached = []
    for module in ("keyplane.handlers.console_keys", "keyplane.handlers.permissions"):
        monkeypatch.setattr(f"{module}.current_actor", lambda: reached.append(path))
    response = client.request(
        method,
        path,
        headers=factory.auth(admin),
        json={"description": "x", "flatPermissionsList": []},
    )
    if body is None:
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "permission_id"]
    else:
        assert response.status_code == 404
        assert response.json() == body
    assert reached == []


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "body"),
    [
        ("POST", "/v1/api-keys", {"json": {"description": "a\x00b"}}, 422, None),
        (
            "POST",
            "/apikeys",
            {"json": {"description": "a\x00b", "flatPermissionsList": []}},
            400,
            None,
        ),
        (
            "POST",
            "/apikeys",
            {"json": {"description": "ok", "flatPermissionsList": ["read\x00"]}},
            400,
            {"error": "flatPermissionsList.0: String should not contain NUL characters"},
        ),
        (
            "POST",
            "/v1/auth/token",
            {"data": {"grant_type": "password", "username": "a\x00", "password": "x"}},
            422,
            None,
        ),
    ],
)
def test_nul_characters_are_refused_before_postgresql_sees_them(
    client, factory, method, path, kwargs, status, body
):
    """Found by Schemathesis on PostgreSQL: text columns cannot hold NUL (was a 500)."""
    admin = factory.user(factory.account(), Role.ADMIN)
    before = factory.count_keys()
    response = client.request(method, path, headers=factory.auth(admin), **kwargs)
    assert response.status_code == status
    if body is not None:
        assert response.json() == body
    assert factory.count_keys() == before
