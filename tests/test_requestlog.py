"""One JSON line per request; X-Request-ID accepted, generated and returned."""

from __future__ import annotations

import json
import logging

import pytest

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
