"""One JSON line per request; X-Request-ID accepted, generated and returned."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from keyplane.app import create_app
from keyplane.db.models import Role


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger="keyplane.requests")

    def read() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "keyplane.requests"]

    return read


def test_a_line_per_request_with_the_route_template_account_and_principal(client, factory, lines):
    account = factory.account()
    admin = factory.user(account, Role.ADMIN)
    key, _ = factory.api_key(admin, account)
    response = client.get(
        f"/v1/api-keys/{key.id}", headers={**factory.auth(admin), "X-Request-ID": "trace-42"}
    )
    assert response.headers["X-Request-ID"] == "trace-42"
    [line] = lines()
    assert set(line) == {
        "time", "request_id", "method", "route", "status", "duration_ms", "account_id", "principal",
        "client",
    }  # fmt: skip
    assert line["request_id"] == "trace-42"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/v1/api-keys/{item_id}", 200)
    assert (line["account_id"], line["principal"]) == (account.id, "user")
    assert line["client"] == "testclient"  # the peer's address: the test client's name for it
    assert line["duration_ms"] > 0
    assert line["time"].endswith("Z")


def test_a_request_id_is_generated_when_absent_or_unusable(client, lines):
    first = client.get("/v1/users/me")
    second = client.get("/v1/users/me", headers={"X-Request-ID": "bad id with spaces"})
    generated = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(len(g) == 32 for g in generated) and generated[0] != generated[1]
    assert [line["request_id"] for line in lines()] == generated
    assert [line["status"] for line in lines()] == [401, 401]
    assert lines()[0]["principal"] is None


def test_errors_and_unknown_routes_are_logged_too(client, lines):
    client.get("/nowhere")
    client.post("/v1/keys/verify", json={"key": "kp_nope"})  # no verifier credential
    assert [(line["route"], line["status"]) for line in lines()] == [
        (None, 404),
        ("/v1/keys/verify", 401),
    ]


def test_a_forwarded_header_without_trusted_proxies_is_ignored_and_warned_of_once(
    settings, engine, caplog
):
    """Behind a proxy nobody listed, every client would look like the proxy: the first
    such header says so in the log (once per process), and is never believed."""
    app = create_app(replace(settings, trusted_proxies=()))
    with app.test_client() as client, caplog.at_level(logging.INFO, logger="keyplane.requests"):
        app.service.sender.stop()
        client.get("/healthz")
        for _ in range(2):
            client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "KEYPLANE_TRUSTED_PROXIES" in warnings[0] and "203.0.113.9" not in warnings[0]
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    assert [line["client"] for line in logged] == ["testclient"] * 3
