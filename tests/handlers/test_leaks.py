"""``/v1/leaks``: leaked keys reported by GitHub's secret scanning, or the operator's
scanners, are revoked or switched off, audited, and told to the account's webhooks.

GitHub's side is played by a key pair made here: its public half is what Keyplane is
configured with, as it would be with GitHub's published keys.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from sqlalchemy import select

from keyplane import db
from keyplane.db.models import AuditEvent, Role, WebhookEvent
from keyplane.leaks import GitHubKeys
from tests.github import GitHub
from tests.github import found as _found

OPERATOR_TOKEN = "leak-report-token-for-the-tests-only-0123456789"


@pytest.fixture
def github(app, tmp_path):
    """Keyplane configured with GitHub's (here: the test's) public key."""
    github = GitHub()
    runtime = app.service.runtime
    object.__setattr__(runtime, "github_leak_keys", GitHubKeys(str(github.publish(tmp_path))))
    yield github
    object.__setattr__(runtime, "github_leak_keys", GitHubKeys(None))


@pytest.fixture
def operator_scanner(app):
    runtime = app.service.runtime
    object.__setattr__(runtime, "leak_report_token", OPERATOR_TOKEN)
    yield {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    object.__setattr__(runtime, "leak_report_token", None)


def _report(client, github, *tokens):
    """The tokens, reported as GitHub reports them."""
    body, headers = github.signed(_found(*tokens))
    return client.post("/v1/leaks/github", content=body, headers=headers)


def _state(client, factory, admin, key_id):
    return client.get(f"/v1/api-keys/{key_id}", headers=factory.auth(admin)).json()


def _leaks(factory):
    with factory.sessions() as session:
        return session.scalars(
            select(AuditEvent).where(AuditEvent.action == "key.leaked").order_by(AuditEvent.id)
        ).all()


class TestGithub:
    def test_200_a_signed_report_revokes_audits_tells_and_labels(
        self, client, factory, acme, admin, github
    ):
        client.post(
            "/v1/webhooks",
            json={"url": "https://hooks.example.com/k", "event_types": ["key.leaked"]},
            headers=factory.auth(admin),
        )
        key, full_key = factory.api_key(admin, acme)
        report = _found(full_key, "kp_notakeyatall", "ghp_somethingelse")
        body, headers = github.signed(report)
        answer = client.post("/v1/leaks/github", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == [
            {"token_raw": full_key, "token_type": "keyplane_api_key", "label": "true_positive"},
            {
                "token_raw": "kp_notakeyatall",
                "token_type": "keyplane_api_key",
                "label": "false_positive",
            },
            {
                "token_raw": "ghp_somethingelse",
                "token_type": "keyplane_api_key",
                "label": "false_positive",
            },
        ]
        assert _state(client, factory, admin, key.id)["status"] == "revoked"
        (leak,) = _leaks(factory)
        assert (leak.actor_type, leak.target_id, leak.account_id) == (
            "scanner",
            str(key.id),
            acme.id,
        )
        assert leak.changes["url"] == report[0]["url"] and leak.changes["action"] == "revoked"
        with factory.sessions() as session:
            (event,) = session.scalars(select(WebhookEvent)).all()
        assert event.type == "key.leaked"
        assert event.payload["data"]["leak"]["url"] == report[0]["url"]
        assert event.payload["data"]["object"]["status"] == "revoked"
        verified = client.post(
            "/v1/keys/verify", json={"key": full_key}, headers=factory.verifier(acme)
        )
        assert verified.json()["valid"] is False

    def test_200_the_account_policy_may_disable_instead(
        self, client, factory, acme, admin, member, github
    ):
        client.put("/v1/account/policy", json={"on_leak": "disable"}, headers=factory.auth(admin))
        key, full_key = factory.api_key(member, acme)
        body, headers = github.signed(_found(full_key))
        assert client.post("/v1/leaks/github", content=body, headers=headers).status_code == 200
        shown = _state(client, factory, admin, key.id)
        assert (shown["status"], shown["enabled"], shown["disabled_by"]) == (
            "disabled",
            False,
            "leak",
        )
        switched_on = client.patch(
            f"/v1/api-keys/{key.id}", json={"enabled": True}, headers=factory.auth(member)
        )
        assert switched_on.status_code == 403  # only an admin, after a leak

    def test_200_a_rotated_keys_old_secret_in_its_grace_is_a_true_positive(
        self, client, factory, acme, admin, github
    ):
        key, old = factory.api_key(admin, acme)
        rotated = client.post(
            f"/v1/api-keys/{key.id}/rotate",
            json={"grace_period_seconds": 3600},
            headers=factory.auth(admin),
        )
        assert rotated.status_code == 200
        answer = _report(client, github, old)
        assert answer.json()[0]["label"] == "true_positive"
        assert _state(client, factory, admin, key.id)["status"] == "revoked"

    def test_200_a_key_off_for_a_leak_comes_back_only_rotated(
        self, client, factory, acme, admin, github
    ):
        client.put("/v1/account/policy", json={"on_leak": "disable"}, headers=factory.auth(admin))
        key, leaked = factory.api_key(admin, acme)
        body, headers = github.signed(_found(leaked))
        assert client.post("/v1/leaks/github", content=body, headers=headers).status_code == 200
        path = f"/v1/api-keys/{key.id}"
        refused = client.patch(path, json={"enabled": True}, headers=factory.auth(admin))
        assert refused.status_code == 409
        assert refused.json() == {"detail": db.api_keys.ROTATE_AFTER_LEAK}
        rotated = client.post(
            f"{path}/rotate", json={"grace_period_seconds": 3600}, headers=factory.auth(admin)
        )
        assert rotated.status_code == 200
        assert rotated.json()["disabled_by"] == "admin"  # still off; the grace was not given
        switched_on = client.patch(path, json={"enabled": True}, headers=factory.auth(admin))
        assert switched_on.status_code == 200
        for full_key, valid in ((leaked, False), (rotated.json()["full_key"], True)):
            answer = client.post(
                "/v1/keys/verify", json={"key": full_key}, headers=factory.verifier(acme)
            )
            assert answer.json()["valid"] is valid

    def test_200_an_old_secret_past_its_grace_is_no_longer_this_keys(
        self, client, factory, acme, admin, github, clock
    ):
        key, old = factory.api_key(admin, acme)
        client.post(
            f"/v1/api-keys/{key.id}/rotate",
            json={"grace_period_seconds": 60},
            headers=factory.auth(admin),
        )
        clock.move(seconds=61)
        answer = _report(client, github, old)
        assert answer.json()[0]["label"] == "false_positive"
        assert _state(client, factory, admin, key.id)["status"] == "active"

    def test_200_a_token_twice_in_one_report_is_acted_on_once(
        self, client, factory, acme, admin, github
    ):
        _, full_key = factory.api_key(admin, acme)
        answer = _report(client, github, full_key, full_key)
        assert [f["label"] for f in answer.json()] == ["true_positive", "true_positive"]
        assert len(_leaks(factory)) == 1

    def test_409_the_same_report_under_the_other_valid_signature(
        self, client, factory, acme, admin, github
    ):
        _, full_key = factory.api_key(admin, acme)
        body, headers = github.signed(_found(full_key))
        assert client.post("/v1/leaks/github", content=body, headers=headers).status_code == 200
        r, s = decode_dss_signature(base64.b64decode(headers["GITHUB-PUBLIC-KEY-SIGNATURE"]))
        n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's order
        twin = base64.b64encode(encode_dss_signature(r, n - s)).decode()
        again = client.post(
            "/v1/leaks/github",
            content=body,
            headers=headers | {"GITHUB-PUBLIC-KEY-SIGNATURE": twin},
        )
        assert again.status_code == 409
        assert len(_leaks(factory)) == 1

    def test_401_unsigned_wrongly_signed_or_by_an_unknown_key_changes_nothing(
        self, client, factory, acme, admin, github
    ):
        key, full_key = factory.api_key(admin, acme)
        report = _found(full_key)
        body, headers = github.signed(report)
        impostor = GitHub()
        _, forged = impostor.signed(report)
        _, unknown = github.signed(report, key_id="f" * 64)
        tampered = json.dumps(_found(full_key, url="https://elsewhere.example")).encode()
        unsigned = {"Content-Type": "application/json"}
        for sent, with_headers in [
            (body, unsigned),
            (body, forged),
            (body, unknown),
            (tampered, headers),
            (body, headers | {"GITHUB-PUBLIC-KEY-SIGNATURE": "AAAA"}),
        ]:
            answer = client.post("/v1/leaks/github", content=sent, headers=with_headers)
            assert answer.status_code == 401, answer.text
        assert _state(client, factory, admin, key.id)["status"] == "active"
        assert _leaks(factory) == []

    def test_409_a_replayed_report_changes_nothing(self, client, factory, acme, admin, github):
        _, full_key = factory.api_key(admin, acme)
        body, headers = github.signed(_found(full_key))
        assert client.post("/v1/leaks/github", content=body, headers=headers).status_code == 200
        again = client.post("/v1/leaks/github", content=body, headers=headers)
        assert again.status_code == 409
        assert again.json() == {"detail": "This report was received before: it changes nothing"}
        assert len(_leaks(factory)) == 1

    def test_415_for_a_form_body(self, client, github):
        answer = client.post("/v1/leaks/github", data={"token": "x"})
        assert answer.status_code == 415

    @pytest.mark.parametrize(
        "report",
        [{"token": "kp_x"}, [], [{"type": "keyplane_api_key"}], [{"token": 5}]],
        ids=["not an array", "empty", "no token", "token not a string"],
    )
    def test_422_a_malformed_report_changes_nothing(
        self, client, factory, acme, admin, github, report
    ):
        key, _ = factory.api_key(admin, acme)
        body, headers = github.signed(report)
        answer = client.post("/v1/leaks/github", content=body, headers=headers)
        assert answer.status_code == 422
        assert _state(client, factory, admin, key.id)["status"] == "active"


class TestReport:
    def test_200_the_operators_scanner_revokes_in_any_account(
        self, client, factory, acme, admin, operator_scanner
    ):
        globex = factory.account("globex")
        other_admin = factory.user(globex, Role.ADMIN)
        mine, mine_full = factory.api_key(admin, acme)
        theirs, theirs_full = factory.api_key(other_admin, globex)
        answer = client.post(
            "/v1/leaks", json=_found(mine_full, theirs_full), headers=operator_scanner
        )
        assert [f["label"] for f in answer.json()] == ["true_positive", "true_positive"]
        assert _state(client, factory, admin, mine.id)["status"] == "revoked"
        assert _state(client, factory, other_admin, theirs.id)["status"] == "revoked"
        assert {leak.changes["reporter"] for leak in _leaks(factory)} == {"operator"}
        again = client.post("/v1/leaks", json=_found(mine_full), headers=operator_scanner)
        assert again.json()[0]["label"] == "true_positive"
        assert _leaks(factory)[-1].changes["action"] == "none: already revoked"

    def test_401_without_the_token_or_when_none_is_set(
        self, client, factory, acme, admin, operator_scanner
    ):
        key, full_key = factory.api_key(admin, acme)
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, factory.auth(admin)):
            assert (
                client.post("/v1/leaks", json=_found(full_key), headers=headers).status_code == 401
            )
        assert _state(client, factory, admin, key.id)["status"] == "active"

    def test_415_for_a_form_body(self, client, operator_scanner):
        answer = client.post("/v1/leaks", data={"token": "x"}, headers=operator_scanner)
        assert answer.status_code == 415

    def test_422_for_too_many_tokens(self, client, operator_scanner):
        answer = client.post("/v1/leaks", json=[{"token": "x"}] * 1001, headers=operator_scanner)
        assert answer.status_code == 422


def test_a_database_that_fails_mid_report_answers_500_and_changes_nothing(
    app, client, factory, acme, admin, github, monkeypatch
):
    key, full_key = factory.api_key(admin, acme)
    body, headers = github.signed(_found(full_key))

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("keyplane.db.leaks.act_on", bug)
    answer = client.post("/v1/leaks/github", content=body, headers=headers)
    assert answer.status_code == 500 and answer.json() == {"detail": "Internal Server Error"}
    monkeypatch.undo()
    assert _state(client, factory, admin, key.id)["status"] == "active"
    retried = client.post("/v1/leaks/github", content=body, headers=headers)
    assert retried.status_code == 200  # the failed attempt was not remembered as received
