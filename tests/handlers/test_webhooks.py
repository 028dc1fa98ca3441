"""``/v1/webhooks``: endpoints, signed events from the outbox, deliveries and retries.

Events go to real HTTP receivers on loopback (``tests.receivers``), sent by a real
``Sender`` that the test drives with its own clock: each ``send_due(now)`` is one round
of the sender's loop, so a retry schedule of days runs in a moment.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from keyplane import db
from keyplane.db.crypto import Secrets
from keyplane.db.engine import Limits, make_engine
from keyplane.db.models import AuditEvent, Role, Webhook, WebhookDelivery, WebhookEvent
from keyplane.db.session import Sessions
from keyplane.webhooks import NOT_ALLOWED, UNREADABLE_SECRET, Sender
from tests.receivers import receiving


@pytest.fixture
def private_allowed(app):
    """Endpoints on loopback may be registered (the receivers are there)."""
    runtime = app.service.runtime
    object.__setattr__(runtime, "webhooks_allow_private", True)
    yield
    object.__setattr__(runtime, "webhooks_allow_private", False)


@pytest.fixture
def sender(app, private_allowed):
    """The test's sender in place of the server's: it sends when the test says."""
    app.service.sender.stop()
    yield Sender(
        app.service.sessions, app.service.runtime.secrets, timeout_seconds=1, allow_private=True
    )
    app.service.sender.start()


def _register(client, factory, admin, url, **fields):
    made = client.post("/v1/webhooks", json={"url": url, **fields}, headers=factory.auth(admin))
    assert made.status_code == 201, made.text
    return made.json()


@pytest.fixture
def hook(client, factory, admin, private_allowed):
    return _register(client, factory, admin, "http://127.0.0.1:9/hook", description="billing")


def _key(client, factory, user, **fields):
    made = client.post("/v1/api-keys", json=fields, headers=factory.auth(user))
    assert made.status_code == 201, made.text
    return made.json()


def _drain(sender, now=None, rounds=20):
    now = now or datetime.now(UTC)
    for _ in range(rounds):
        if not sender.send_due(now):
            return


def _deliveries(client, factory, admin, hook_id, **params):
    listed = client.get(
        f"/v1/webhooks/{hook_id}/deliveries", params=params, headers=factory.auth(admin)
    )
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]


class TestCreate:
    def test_201_the_secret_is_shown_once_and_the_change_audited(
        self, client, factory, admin, private_allowed
    ):
        made = _register(
            client, factory, admin, "http://127.0.0.1:9/h", event_types=["key.revoked"]
        )
        assert made["secret"].startswith("whsec_") and len(made["secret"]) == 50
        assert made["event_types"] == ["key.revoked"] and made["enabled"] is True
        shown = client.get(f"/v1/webhooks/{made['id']}", headers=factory.auth(admin)).json()
        assert shown == {k: v for k, v in made.items() if k != "secret"}
        listed = client.get("/v1/webhooks", headers=factory.auth(admin)).json()
        assert listed == {"items": [shown], "next_cursor": None}
        with factory.sessions() as session:
            audited = session.scalars(select(AuditEvent.action)).all()
        assert "webhook.created" in audited
        assert made["secret"] not in str(
            client.get("/v1/audit-events", headers=factory.auth(admin)).json()
        )

    def test_401_without_a_credential(self, client):
        assert client.post("/v1/webhooks", json={"url": "https://a.example"}).status_code == 401

    def test_403_for_a_member_and_for_an_api_key(self, client, factory, acme, admin, member):
        body = {"url": "https://a.example/h"}
        assert (
            client.post("/v1/webhooks", json=body, headers=factory.auth(member)).status_code == 403
        )
        _, full_key = factory.api_key(admin, acme)
        by_key = client.post("/v1/webhooks", json=body, headers={"X-API-Key": full_key})
        assert by_key.status_code == 403
        assert by_key.json() == {"detail": "API keys cannot manage webhooks"}

    def test_415_for_a_form_body(self, client, factory, admin):
        answer = client.post("/v1/webhooks", data={"url": "x"}, headers=factory.auth(admin))
        assert answer.status_code == 415

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/h",
            "http://localhost:8080/h",
            "https://10.1.2.3/h",
            "http://[::1]/h",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:192.168.0.1]/h",
            "http://[64:ff9b::a00:1]/h",
            "http://[2002:7f00:1::]/h",
            "http://[fec0::1]/h",
            "http://2130706433/h",
            "http://127.1/h",
            "http://0x7f000001/h",
        ],
    )
    def test_422_for_a_private_address_unless_allowed(self, client, factory, admin, url):
        answer = client.post("/v1/webhooks", json={"url": url}, headers=factory.auth(admin))
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "url"]
        assert client.get("/v1/webhooks", headers=factory.auth(admin)).json()["items"] == []

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "ftp://a.example/h"},
            {"url": "https://user:pw@a.example/h"},
            {"url": "https://a.example:99999/h"},
            {"url": "Https://\u00afS\u00cb[;"},
            {"url": "https://\u00e9\u0301" + "x" * 70 + ".example/h"},
            {"url": "https://a.example/h", "event_types": ["key.exploded"]},
            {"url": "https://a.example/h", "secret": "whsec_mine"},
        ],
    )
    def test_422_for_what_cannot_be_an_endpoint(self, client, factory, admin, body):
        answer = client.post("/v1/webhooks", json=body, headers=factory.auth(admin))
        assert answer.status_code == 422, answer.text

    def test_409_beyond_the_endpoints_an_account_may_have(self, client, factory, acme, admin):
        for n in range(db.webhooks.MAX_PER_ACCOUNT):
            factory.webhook(acme, f"https://hooks.example.com/{n}")
        answer = client.post(
            "/v1/webhooks", json={"url": "https://one.example/more"}, headers=factory.auth(admin)
        )
        assert answer.status_code == 409
        listed = client.get("/v1/webhooks?limit=100", headers=factory.auth(admin)).json()
        assert len(listed["items"]) == db.webhooks.MAX_PER_ACCOUNT


class TestList:
    def test_200_newest_first_in_pages_and_only_the_accounts(
        self, client, factory, admin, private_allowed
    ):
        made = [_register(client, factory, admin, f"http://127.0.0.1:9/{n}") for n in range(3)]
        other = factory.user(factory.account("other"), Role.ADMIN)
        _register(client, factory, other, "http://127.0.0.1:9/other")
        first = client.get("/v1/webhooks?limit=2", headers=factory.auth(admin)).json()
        assert [w["id"] for w in first["items"]] == [made[2]["id"], made[1]["id"]]
        rest = client.get(
            f"/v1/webhooks?limit=2&cursor={first['next_cursor']}", headers=factory.auth(admin)
        ).json()
        assert [w["id"] for w in rest["items"]] == [made[0]["id"]]
        assert rest["next_cursor"] is None

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/webhooks").status_code == 401

    def test_403_for_a_member(self, client, factory, member):
        assert client.get("/v1/webhooks", headers=factory.auth(member)).status_code == 403

    def test_422_for_a_limit_out_of_range(self, client, factory, admin):
        assert client.get("/v1/webhooks?limit=0", headers=factory.auth(admin)).status_code == 422


class TestGet:
    def test_200_without_the_secret(self, client, factory, admin, hook):
        shown = client.get(f"/v1/webhooks/{hook['id']}", headers=factory.auth(admin))
        assert shown.status_code == 200 and "secret" not in shown.json()

    def test_401_without_a_credential(self, client, hook):
        assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.get(f"/v1/webhooks/{hook['id']}", headers=factory.auth(member))
        assert answer.status_code == 403

    def test_404_for_another_accounts(self, client, factory, hook):
        other = factory.user(factory.account("other"), Role.ADMIN)
        answer = client.get(f"/v1/webhooks/{hook['id']}", headers=factory.auth(other))
        assert answer.status_code == 404 and answer.json() == {"detail": "Webhook not found"}

    def test_422_for_an_id_that_is_no_number(self, client, factory, admin):
        assert client.get("/v1/webhooks/x", headers=factory.auth(admin)).status_code == 422


class TestUpdate:
    def test_200_changes_what_is_given_and_audits_it(self, client, factory, admin, hook):
        changed = client.patch(
            f"/v1/webhooks/{hook['id']}",
            json={"enabled": False, "event_types": ["key.leaked"]},
            headers=factory.auth(admin),
        )
        assert changed.status_code == 200
        assert changed.json() | {"updated_at": None} == {
            **{k: v for k, v in hook.items() if k != "secret"},
            "enabled": False,
            "event_types": ["key.leaked"],
            "updated_at": None,
        }
        with factory.sessions() as session:
            event = session.scalar(select(AuditEvent).where(AuditEvent.action == "webhook.updated"))
        assert event.changes == {
            "enabled": {"from": True, "to": False},
            "event_types": {"from": [], "to": ["key.leaked"]},
        }

    def test_401_without_a_credential(self, client, hook):
        assert client.patch(f"/v1/webhooks/{hook['id']}", json={}).status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.patch(
            f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=factory.auth(member)
        )
        assert answer.status_code == 403

    def test_404_for_a_missing_one(self, client, factory, admin):
        answer = client.patch("/v1/webhooks/99", json={}, headers=factory.auth(admin))
        assert answer.status_code == 404

    def test_415_for_a_form_body(self, client, factory, admin, hook):
        answer = client.patch(
            f"/v1/webhooks/{hook['id']}", data={"enabled": "x"}, headers=factory.auth(admin)
        )
        assert answer.status_code == 415

    def test_422_for_a_private_url_when_not_allowed(self, client, factory, admin, hook, app):
        object.__setattr__(app.service.runtime, "webhooks_allow_private", False)
        answer = client.patch(
            f"/v1/webhooks/{hook['id']}",
            json={"url": "http://192.168.1.1/h"},
            headers=factory.auth(admin),
        )
        assert answer.status_code == 422
        shown = client.get(f"/v1/webhooks/{hook['id']}", headers=factory.auth(admin)).json()
        assert shown["url"] == hook["url"]


class TestDelete:
    def test_204_and_it_is_gone_with_its_deliveries(self, client, factory, admin, hook):
        _key(client, factory, admin)
        answer = client.delete(f"/v1/webhooks/{hook['id']}", headers=factory.auth(admin))
        assert answer.status_code == 204
        assert (
            client.get(f"/v1/webhooks/{hook['id']}", headers=factory.auth(admin)).status_code == 404
        )
        with factory.sessions() as session:
            assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0

    def test_401_without_a_credential(self, client, hook):
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.delete(f"/v1/webhooks/{hook['id']}", headers=factory.auth(member))
        assert answer.status_code == 403

    def test_404_for_a_missing_one(self, client, factory, admin):
        assert client.delete("/v1/webhooks/99", headers=factory.auth(admin)).status_code == 404

    def test_422_for_an_id_that_is_no_number(self, client, factory, admin):
        assert client.delete("/v1/webhooks/x", headers=factory.auth(admin)).status_code == 422


class TestRotateSecret:
    def test_200_both_secrets_sign_during_the_overlap_then_only_the_new(
        self, client, factory, admin, sender, private_allowed
    ):
        with receiving() as receiver:
            made = _register(client, factory, admin, receiver.url)
            rotated = client.post(
                f"/v1/webhooks/{made['id']}/rotate-secret",
                json={"overlap_seconds": 3600},
                headers=factory.auth(admin),
            )
            assert rotated.status_code == 200
            assert rotated.headers["cache-control"] == "no-store"
            new = rotated.json()["secret"]
            assert new != made["secret"] and rotated.json()["previous_secret_valid_until"]
            _key(client, factory, admin)
            _drain(sender)
            (message,) = receiver.wait_for(1)
            assert message.verified(made["secret"]) == message.verified(new)
            assert len(message.headers["webhook-signature"].split(" ")) == 2
            client.post(
                f"/v1/webhooks/{made['id']}/rotate-secret",
                json={"overlap_seconds": 0},
                headers=factory.auth(admin),
            )
            newest = client.get(f"/v1/webhooks/{made['id']}", headers=factory.auth(admin))
            assert newest.json()["previous_secret_valid_until"] is None

    def test_401_without_a_credential(self, client, hook):
        assert client.post(f"/v1/webhooks/{hook['id']}/rotate-secret").status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret", headers=factory.auth(member)
        )
        assert answer.status_code == 403

    def test_404_for_a_missing_one(self, client, factory, admin):
        answer = client.post("/v1/webhooks/99/rotate-secret", headers=factory.auth(admin))
        assert answer.status_code == 404

    def test_415_for_a_form_body(self, client, factory, admin, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret",
            data={"overlap_seconds": "1"},
            headers=factory.auth(admin),
        )
        assert answer.status_code == 415

    def test_422_for_an_overlap_longer_than_a_week(self, client, factory, admin, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret",
            json={"overlap_seconds": 604801},
            headers=factory.auth(admin),
        )
        assert answer.status_code == 422


class TestDeliveries:
    def test_200_each_attempt_with_its_status_and_latency(self, client, factory, admin, sender):
        with receiving(503) as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            now = datetime.now(UTC)
            _drain(sender, now)
            _drain(sender, now + timedelta(seconds=6))
            receiver.wait_for(2)
        (delivery,) = _deliveries(client, factory, admin, made["id"])
        assert delivery["state"] == "delivered" and delivery["event_type"] == "key.created"
        assert [a["status_code"] for a in delivery["attempts"]] == [503, 204]
        assert all(a["latency_ms"] >= 0 and a["error"] is None for a in delivery["attempts"])
        assert delivery["event_id"] == receiver.received[0].id == receiver.received[1].id
        assert _deliveries(client, factory, admin, made["id"], state="pending") == []

    def test_401_without_a_credential(self, client, hook):
        assert client.get(f"/v1/webhooks/{hook['id']}/deliveries").status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=factory.auth(member))
        assert answer.status_code == 403

    def test_404_for_another_accounts_endpoint(self, client, factory, hook):
        other = factory.user(factory.account("other"), Role.ADMIN)
        answer = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=factory.auth(other))
        assert answer.status_code == 404

    def test_422_for_an_unknown_state(self, client, factory, admin, hook):
        answer = client.get(
            f"/v1/webhooks/{hook['id']}/deliveries?state=lost", headers=factory.auth(admin)
        )
        assert answer.status_code == 422


class TestRetry:
    def test_202_a_delivered_event_is_sent_again_with_its_id(self, client, factory, admin, sender):
        with receiving() as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            _drain(sender)
            (delivery,) = _deliveries(client, factory, admin, made["id"])
            again = client.post(
                f"/v1/webhooks/{made['id']}/deliveries/{delivery['id']}/retry",
                headers=factory.auth(admin),
            )
            assert again.status_code == 202 and again.json()["state"] == "pending"
            _drain(sender)
            first, second = receiver.wait_for(2)
        assert first.id == second.id and first.body == second.body
        (delivery,) = _deliveries(client, factory, admin, made["id"])
        assert delivery["state"] == "delivered" and len(delivery["attempts"]) == 2

    def test_409_while_it_is_still_pending(self, client, factory, admin, hook):
        _key(client, factory, admin)
        (delivery,) = _deliveries(client, factory, admin, hook["id"])
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry",
            headers=factory.auth(admin),
        )
        assert answer.status_code == 409

    def test_401_without_a_credential(self, client, hook):
        assert client.post(f"/v1/webhooks/{hook['id']}/deliveries/1/retry").status_code == 401

    def test_403_for_a_member(self, client, factory, member, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/1/retry", headers=factory.auth(member)
        )
        assert answer.status_code == 403

    def test_404_for_a_missing_delivery(self, client, factory, admin, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/1/retry", headers=factory.auth(admin)
        )
        assert answer.status_code == 404 and answer.json() == {"detail": "Delivery not found"}

    def test_422_for_a_delivery_id_out_of_range(self, client, factory, admin, hook):
        answer = client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/0/retry", headers=factory.auth(admin)
        )
        assert answer.status_code == 422


class TestEvents:
    """What an endpoint hears, and when it does not."""

    def test_every_key_event_once_signed_and_in_commit_order(
        self, client, factory, acme, admin, member, sender, clock
    ):
        with receiving() as receiver:
            made = _register(client, factory, admin, receiver.url)
            key = _key(client, factory, member, description="one")
            path = f"/v1/api-keys/{key['id']}"
            client.patch(path, json={"description": "two"}, headers=factory.auth(member))
            rotated = client.post(f"{path}/rotate", json={}, headers=factory.auth(member)).json()
            client.patch(path, json={"enabled": False}, headers=factory.auth(member))
            expiring = _key(
                client,
                factory,
                member,
                expires_at=(clock.now + timedelta(days=3)).isoformat(),
            )
            client.delete(path, headers=factory.auth(member))
            sender.sweep(clock.now)
            sender.sweep(clock.now)  # warned once per expiry
            removed = client.delete(f"/v1/users/{member.id}", headers=factory.auth(admin))
            assert removed.status_code in (200, 204), removed.text
            _drain(sender, clock.now)
            messages = receiver.wait_for(10)
        bodies = [m.verified(made["secret"]) for m in messages]
        keys = [b for b in bodies if b["type"].startswith("key.")]
        about_key = [b["type"] for b in keys if b["data"]["object"]["id"] == key["id"]]
        assert about_key == [
            "key.created",
            "key.updated",
            "key.rotated",
            "key.updated",
            "key.disabled",
            "key.revoked",
        ]
        about_other = [b["type"] for b in keys if b["data"]["object"]["id"] == expiring["id"]]
        assert about_other == ["key.created", "key.expiring", "key.disabled"]
        user_removed = [b for b in bodies if b["type"] == "user.removed"]
        assert [b["data"]["object"]["id"] for b in user_removed] == [member.id]
        assert len({m.id for m in messages}) == len(messages) == 10
        updated = next(b for b in bodies if b["type"] == "key.updated")
        assert updated["data"]["previous_attributes"] == {"description": "one"}
        assert updated["data"]["object"]["description"] == "two"
        secrets = {key["full_key"], expiring["full_key"], rotated["full_key"], made["secret"]}
        assert not any(secret in m.body.decode() for m in messages for secret in secrets)
        assert {b["data"]["object"].get("full_key") for b in keys} == {None}

    def test_a_change_rolled_back_emits_nothing(self, client, factory, acme, admin, hook):
        key = _key(client, factory, admin)
        client.put(
            "/v1/account/policy",
            json={"max_key_lifetime_seconds": 3600},
            headers=factory.auth(admin),
        )
        refused = client.patch(
            f"/v1/api-keys/{key['id']}", json={"description": "x"}, headers=factory.auth(admin)
        )
        assert refused.status_code == 403  # no expiry: outside the new policy, rolled back
        with factory.sessions() as session:
            types = session.scalars(select(WebhookEvent.type)).all()
        assert types == ["key.created"]

    def test_only_the_types_asked_for_and_only_enabled_endpoints(
        self, client, factory, admin, private_allowed
    ):
        revoked_only = _register(
            client, factory, admin, "http://127.0.0.1:9/a", event_types=["key.revoked"]
        )
        off = _register(client, factory, admin, "http://127.0.0.1:9/b", enabled=False)
        key = _key(client, factory, admin)
        client.delete(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin))
        only = _deliveries(client, factory, admin, revoked_only["id"])
        assert [d["event_type"] for d in only] == ["key.revoked"]
        assert _deliveries(client, factory, admin, off["id"]) == []

    def test_three_failures_then_the_fourth_attempt_delivers_with_the_same_id(
        self, client, factory, admin, sender
    ):
        with receiving(500, 502, 0) as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            for delay in (timedelta(0), *db.webhooks.RETRY_DELAYS[:3]):
                assert sender.send_due(datetime.now(UTC) + delay) == 1
                assert sender.send_due(datetime.now(UTC)) == 0  # not due before its delay
            messages = receiver.wait_for(4)
        assert len({m.id for m in messages}) == 1
        (delivery,) = _deliveries(client, factory, admin, made["id"])
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 502, None, 204]
        assert delivery["attempts"][2]["error"] == "timed out"
        assert delivery["state"] == "delivered"

    def test_an_answer_the_database_cannot_take_at_once_is_recorded_and_not_sent_again(
        self, client, factory, admin, sender, database_url
    ):
        """The answer comes while the sender's one connection is taken (the database
        away for 5 s): it is recorded once the database is back, within the lease, and
        no later round sends the event again."""
        narrow = make_engine(
            database_url, Limits(pool_size=1, max_overflow=0, pool_timeout_seconds=0.2)
        )
        away = Sender(Sessions.of(narrow), sender.secrets, timeout_seconds=1, allow_private=True)
        answer = threading.Event()
        try:
            with receiving(gate=answer) as receiver:
                made = _register(client, factory, admin, receiver.url)
                _key(client, factory, admin)
                sending = threading.Thread(target=away.send_due, args=(datetime.now(UTC),))
                sending.start()
                receiver.wait_for(1)
                with narrow.connect():
                    answer.set()
                    time.sleep(5)
                sending.join(30)
                after_the_lease = datetime.now(UTC) + away.lease + timedelta(minutes=1)
                assert away.send_due(after_the_lease) == 0
                assert len(receiver.received) == 1
        finally:
            narrow.dispose()
        (delivery,) = _deliveries(client, factory, admin, made["id"])
        assert delivery["state"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [204]

    def test_an_endpoint_that_never_answers_ends_dead_after_the_schedule(
        self, client, factory, admin, sender
    ):
        with receiving(then=0) as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            for delay in (timedelta(0), *db.webhooks.RETRY_DELAYS):
                assert sender.send_due(datetime.now(UTC) + delay) == 1
            assert sender.send_due(datetime.now(UTC) + timedelta(days=30)) == 0
        (delivery,) = _deliveries(client, factory, admin, made["id"], state="dead")
        assert len(delivery["attempts"]) == db.webhooks.ATTEMPTS == 10
        assert {a["status_code"] for a in delivery["attempts"]} == {None}
        assert sum(db.webhooks.RETRY_DELAYS, timedelta()) < timedelta(days=3)

    def test_a_later_event_about_a_key_waits_for_an_earlier_one(
        self, client, factory, admin, sender
    ):
        with receiving(500) as receiver:
            made = _register(client, factory, admin, receiver.url)
            key = _key(client, factory, admin)
            client.delete(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin))
            other = _key(client, factory, admin)
            now = datetime.now(UTC)
            _drain(sender, now)
            types = [m.verified(made["secret"])["type"] for m in receiver.wait_for(2)]
            assert types == ["key.created", "key.created"]  # the other key's is not held up
            _drain(sender, now + timedelta(seconds=6))
            bodies = [m.verified(made["secret"]) for m in receiver.wait_for(4)]
        assert [(b["type"], b["data"]["object"]["id"]) for b in bodies[2:]] == [
            ("key.created", key["id"]),
            ("key.revoked", key["id"]),
        ]
        assert bodies[1]["data"]["object"]["id"] == other["id"]

    def test_a_name_that_resolves_to_loopback_is_not_sent_to(self, client, factory, admin, sender):
        with receiving() as receiver:
            made = _register(client, factory, admin, receiver.url.replace("127.0.0.1", "localhost"))
            _key(client, factory, admin)
            strict = Sender(sender.sessions, sender.secrets, timeout_seconds=1)
            _drain(strict)
            assert receiver.received == []
        (delivery,) = _deliveries(client, factory, admin, made["id"])
        assert delivery["state"] == "pending"
        assert delivery["attempts"][0]["error"] == NOT_ALLOWED

    def test_usage_exceeded_once_per_key_and_window_whatever_the_workers(
        self, app, client, factory, acme, admin, private_allowed
    ):
        _register(client, factory, admin, "http://127.0.0.1:9/h", event_types=["usage.exceeded"])
        limited = _key(
            client,
            factory,
            admin,
            ratelimits=[
                {"name": "requests", "limit": 1, "duration_ms": 3_600_000, "auto_apply": True}
            ],
        )
        spent = _key(client, factory, admin, credits={"remaining": 1})

        def verify(key):
            answer = client.post(
                "/v1/keys/verify", json={"key": key["full_key"]}, headers=factory.verifier(acme)
            )
            return answer.json()["code"]

        assert [verify(limited) for _ in range(3)] == ["VALID", "RATE_LIMITED", "RATE_LIMITED"]
        assert [verify(spent) for _ in range(3)] == ["VALID", "USAGE_EXCEEDED", "USAGE_EXCEEDED"]
        app.service.flusher.flush()
        # Another worker sees the same windows refused: the outbox tells them once.
        app.service.runtime.usage._told.clear()
        assert verify(limited) == "RATE_LIMITED" and verify(spent) == "USAGE_EXCEEDED"
        app.service.flusher.flush()
        with factory.sessions() as session:
            events = session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)).all()
        told = [
            (e.type, e.payload["data"]["object"]["id"], e.payload["data"]["code"]) for e in events
        ]
        assert sorted(told) == sorted(
            [
                ("usage.exceeded", limited["id"], "RATE_LIMITED"),
                ("usage.exceeded", spent["id"], "USAGE_EXCEEDED"),
            ]
        )
        by_code = {e.payload["data"]["code"]: e.payload["data"] for e in events}
        assert by_code["RATE_LIMITED"]["ratelimit"]["name"] == "requests"
        assert by_code["RATE_LIMITED"]["ratelimit"]["exceeded"] is True
        assert by_code["USAGE_EXCEEDED"]["credits_remaining"]["key"] == 0

    def test_a_change_in_an_account_without_endpoints_reads_nothing_more(
        self, client, factory, admin, statements
    ):
        key = _key(client, factory, admin)
        statements.clear()
        for body in ({"description": "changed"}, {"enabled": False}):
            changed = client.patch(
                f"/v1/api-keys/{key['id']}", json=body, headers=factory.auth(admin)
            )
            assert changed.status_code == 200
        assert (
            client.delete(f"/v1/api-keys/{key['id']}", headers=factory.auth(admin)).status_code
            == 200
        )
        # The lock's own statement tells that no endpoint listens (and a PATCH's first
        # read, which picks its path, too): no read of its own.
        own_reads = [s for s in statements if "FROM webhooks" in s and "api_keys" not in s]
        assert own_reads == []
        assert sum("FROM webhooks" in s for s in statements) == 2 + 2 + 1
        with factory.sessions() as session:
            assert session.scalars(select(WebhookEvent)).all() == []

    def test_a_disabled_endpoints_deliveries_wait_until_it_is_enabled(
        self, client, factory, admin, sender
    ):
        with receiving() as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            path = f"/v1/webhooks/{made['id']}"
            client.patch(path, json={"enabled": False}, headers=factory.auth(admin))
            assert sender.send_due(datetime.now(UTC)) == 0
            client.patch(path, json={"enabled": True}, headers=factory.auth(admin))
            _drain(sender)
            (message,) = receiver.wait_for(1)
        assert message.verified(made["secret"])["type"] == "key.created"

    def test_a_dead_delivery_retried_gets_one_attempt_more(self, client, factory, admin, sender):
        with receiving(then=500) as receiver:
            made = _register(client, factory, admin, receiver.url)
            _key(client, factory, admin)
            for delay in (timedelta(0), *db.webhooks.RETRY_DELAYS):
                assert sender.send_due(datetime.now(UTC) + delay) == 1
            (dead,) = _deliveries(client, factory, admin, made["id"], state="dead")
            retried = client.post(
                f"/v1/webhooks/{made['id']}/deliveries/{dead['id']}/retry",
                headers=factory.auth(admin),
            )
            assert retried.status_code == 202
            assert sender.send_due(datetime.now(UTC)) == 1
            assert sender.send_due(datetime.now(UTC) + timedelta(days=3)) == 0
            receiver.wait_for(db.webhooks.ATTEMPTS + 1)
        (again,) = _deliveries(client, factory, admin, made["id"], state="dead")
        assert len(again["attempts"]) == db.webhooks.ATTEMPTS + 1

    def test_an_unreadable_secret_fails_its_endpoint_alone(
        self, client, factory, acme, admin, sender
    ):
        with receiving() as receiver:
            good = _register(client, factory, admin, receiver.url, description="good")
            lost = _register(client, factory, admin, receiver.url, description="lost")
            retired = Secrets.derive("a server secret this server no longer has" + "x" * 8)
            with factory.sessions() as session, session.begin():
                webhook = session.get(Webhook, lost["id"])
                webhook.secret_sealed = retired.seal("whsec_" + "A" * 43)
            _key(client, factory, admin)
            _drain(sender)
            (message,) = receiver.wait_for(1)
        assert message.verified(good["secret"])["type"] == "key.created"
        (failed,) = _deliveries(client, factory, admin, lost["id"])
        assert failed["attempts"][0]["error"] == UNREADABLE_SECRET
