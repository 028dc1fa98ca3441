"""``GET /v1/usage`` and ``GET /v1/api-keys/{item_id}/usage``: every verify counted."""

from __future__ import annotations

import pytest

from keyplane.db.crypto import generate_api_key
from keyplane.db.models import Role

HOUR = {"group_by": "code"}


@pytest.fixture
def flush(app):
    """Writes the worker's counts now; counts noted by earlier tests are dropped first."""
    app.service.runtime.usage.take()
    return app.service.flusher.flush


def _verify(client, verifier, full_key, **extra):
    answer = client.post("/v1/keys/verify", json={"key": full_key, **extra}, headers=verifier)
    assert answer.status_code == 200, answer.text
    return answer.json()["code"]


def _usage(client, headers, path="/v1/usage", **params):
    answer = client.get(path, params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _counts(report, *dimensions):
    return {tuple(item[d] for d in dimensions): item["count"] for item in report["items"]}


class TestList:
    def test_200_every_verify_is_counted_by_code_key_and_customer(
        self, client, factory, acme, admin, verifier, flush, clock
    ):
        _, mine = factory.api_key(admin, acme, permissions=("readApplications",))
        made = client.post(
            "/v1/api-keys", json={"external_id": "cus_1"}, headers=factory.auth(admin)
        ).json()
        for _ in range(3):
            _verify(client, verifier, mine)
        for _ in range(2):
            _verify(client, verifier, mine, permissions=["writeApplications"])
        _verify(client, verifier, made["full_key"])
        _verify(client, verifier, generate_api_key())
        flush()
        headers = factory.auth(admin)
        by_code = _usage(client, headers)
        assert by_code["group_by"] == ["code"] and by_code["has_more"] is False
        assert _counts(by_code, "code") == {
            ("INSUFFICIENT_PERMISSIONS",): 2,
            ("NOT_FOUND",): 1,
            ("VALID",): 4,
        }
        hour = clock.now.replace(minute=0, second=0, microsecond=0)
        assert {item["time"] for item in by_code["items"]} == {
            hour.isoformat().replace("+00:00", "Z")
        }
        by_key = _usage(client, headers, group_by="key_id,external_id,code")
        assert _counts(by_key, "key_id", "external_id", "code") == {
            (None, None, "NOT_FOUND"): 1,
            (made["id"], "cus_1", "VALID"): 1,
            (_key_id(factory, mine), None, "INSUFFICIENT_PERMISSIONS"): 2,
            (_key_id(factory, mine), None, "VALID"): 3,
        }
        customer = _usage(client, headers, external_id="cus_1")
        assert _counts(customer, "code") == {("VALID",): 1}

    def test_200_tags_are_counted_as_a_dimension(
        self, client, factory, acme, admin, verifier, flush, clock
    ):
        _, full_key = factory.api_key(admin, acme)
        for tags in (["endpoint=/a", "region=eu"], ["endpoint=/a", "region=eu"], ["endpoint=/b"]):
            _verify(client, verifier, full_key, tags=tags)
        _verify(client, verifier, full_key)
        flush()
        headers = factory.auth(admin)
        assert _counts(_usage(client, headers, group_by="tag"), "tag") == {
            ("endpoint=/a",): 2,
            ("endpoint=/b",): 1,
            ("region=eu",): 2,
        }
        assert _counts(_usage(client, headers), "code") == {("VALID",): 4}  # each verify once
        one = _usage(client, headers, tag="endpoint=/a")
        assert _counts(one, "code") == {("VALID",): 2}

    def test_200_by_hour_and_by_day(self, client, factory, acme, admin, verifier, flush, clock):
        _, full_key = factory.api_key(admin, acme)
        clock.now = clock.now.replace(hour=9, minute=30)
        _verify(client, verifier, full_key)
        clock.move(hours=1)
        _verify(client, verifier, full_key)
        _verify(client, verifier, full_key)
        flush()
        headers = factory.auth(admin)
        window = {"from": "2027-01-30T00:00:00Z", "to": "2027-01-31T00:00:00Z"}
        hourly = _usage(client, headers, **window)
        assert [(i["time"], i["count"]) for i in hourly["items"]] == [
            ("2027-01-30T09:00:00Z", 1),
            ("2027-01-30T10:00:00Z", 2),
        ]
        daily = _usage(client, headers, granularity="day", **window)
        assert [(i["time"], i["count"]) for i in daily["items"]] == [("2027-01-30T00:00:00Z", 3)]
        later = _usage(client, headers, **{"from": "2027-01-30T10:00:00Z", "to": window["to"]})
        assert [i["count"] for i in later["items"]] == [2]

    def test_200_members_see_their_own_keys_only(
        self, client, factory, acme, admin, member, verifier, flush, clock
    ):
        _, theirs = factory.api_key(member, acme)
        _, admins = factory.api_key(admin, acme)
        for _ in range(2):
            _verify(client, verifier, theirs)
        _verify(client, verifier, admins)
        _verify(client, verifier, generate_api_key())
        flush()
        seen = _usage(client, factory.auth(member), group_by="key_id")
        assert _counts(seen, "key_id") == {(_key_id(factory, theirs),): 2}
        everything = _usage(client, factory.auth(admin), group_by="key_id")
        assert sum(i["count"] for i in everything["items"]) == 4

    def test_200_another_accounts_verifies_are_not_counted_here(
        self, client, factory, acme, admin, verifier, flush, clock
    ):
        globex = factory.account("globex")
        outsider = factory.user(globex, Role.ADMIN)
        _, theirs = factory.api_key(outsider, globex)
        _, gate = factory.verifier_key(outsider, globex)
        _verify(client, gate, theirs)
        _verify(client, verifier, theirs)  # acme's verifier: NOT_FOUND, counted in acme
        flush()
        assert _counts(_usage(client, factory.auth(admin)), "code") == {("NOT_FOUND",): 1}
        assert _counts(_usage(client, factory.auth(outsider)), "code") == {("VALID",): 1}

    def test_200_has_more_past_the_limit(self, client, factory, acme, admin, verifier, flush):
        _, full_key = factory.api_key(admin, acme)
        _verify(client, verifier, full_key)
        _verify(client, verifier, full_key, permissions=["writeApplications"])
        flush()
        page = _usage(client, factory.auth(admin), limit=1)
        assert (len(page["items"]), page["has_more"]) == (1, True)

    def test_200_counts_older_than_the_retention_are_dropped(
        self, app, client, factory, acme, admin, verifier, flush, clock
    ):
        _, full_key = factory.api_key(admin, acme)
        clock.move(days=-91)
        _verify(client, verifier, full_key)
        clock.move(days=90)
        _verify(client, verifier, full_key)
        clock.move(days=1)
        flush()
        headers = factory.auth(admin)
        old = {"from": "2026-10-01T00:00:00Z", "to": "2026-12-31T00:00:00Z", "granularity": "day"}
        recent = {"granularity": "day", "from": "2027-01-01T00:00:00Z"}
        assert len(_usage(client, headers, **old)["items"]) == 1
        app.service.flusher.purge(clock.now)
        assert _usage(client, headers, **old)["items"] == []
        assert len(_usage(client, headers, **recent)["items"]) == 1

    def test_401_without_a_credential(self, client):
        assert client.get("/v1/usage").status_code == 401

    def test_403_for_an_api_key(self, client, factory, acme, admin):
        _, full_key = factory.api_key(admin, acme)
        answer = client.get("/v1/usage", headers={"X-API-Key": full_key})
        assert (answer.status_code, answer.json()) == (
            403,
            {"detail": "API keys cannot read usage"},
        )

    def test_200_a_question_too_long_is_cut_and_one_backwards_answers_nothing(
        self, client, factory, admin
    ):
        headers = factory.auth(admin)
        long = {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
        assert _usage(client, headers, **long)["from"] == "2026-01-29T00:00:00Z"  # 31 days
        by_day = _usage(client, headers, granularity="day", **long)
        assert by_day["from"] == "2026-01-01T00:00:00Z"
        backwards = {"from": "2027-01-02T00:00:00Z", "to": "2027-01-01T00:00:00Z"}
        assert _usage(client, headers, **backwards)["items"] == []
        earliest = _usage(client, headers, to="0001-01-01T00:00:00Z")
        assert (earliest["from"], earliest["items"]) == ("0001-01-01T00:00:00Z", [])

    @pytest.mark.parametrize(
        ("params", "loc"),
        [
            ({"granularity": "minute"}, "granularity"),
            ({"group_by": "key_id,password"}, "group_by"),
            ({"from": "yesterday"}, "from"),
            ({"limit": "0"}, "limit"),
        ],
    )
    def test_422_for_a_question_out_of_bounds(self, client, factory, admin, params, loc):
        answer = client.get("/v1/usage", params=params, headers=factory.auth(admin))
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"][:2] == ["query", loc]


class TestOfKey:
    def test_200_one_keys_counts(self, client, factory, acme, admin, verifier, flush, clock):
        record, full_key = factory.api_key(admin, acme)
        _, other = factory.api_key(admin, acme)
        _verify(client, verifier, full_key, tags=["plan=pro"])
        _verify(client, verifier, other)
        flush()
        path = f"/v1/api-keys/{record.id}/usage"
        report = _usage(client, factory.auth(admin), path, group_by="key_id,code,tag")
        assert _counts(report, "key_id", "code", "tag") == {(record.id, "VALID", "plan=pro"): 1}

    def test_401_without_a_credential(self, client, factory, acme, admin):
        record, _ = factory.api_key(admin, acme)
        assert client.get(f"/v1/api-keys/{record.id}/usage").status_code == 401

    def test_403_for_an_api_key(self, client, factory, acme, admin):
        record, full_key = factory.api_key(admin, acme)
        headers = {"X-API-Key": full_key}
        assert client.get(f"/v1/api-keys/{record.id}/usage", headers=headers).status_code == 403

    def test_404_for_a_key_the_caller_cannot_see(self, client, factory, acme, admin, member):
        record, _ = factory.api_key(admin, acme)
        answer = client.get(f"/v1/api-keys/{record.id}/usage", headers=factory.auth(member))
        assert answer.status_code == 404
        assert (
            client.get("/v1/api-keys/999999/usage", headers=factory.auth(admin)).status_code == 404
        )

    def test_422_for_a_day_that_does_not_exist(self, client, factory, acme, admin):
        record, _ = factory.api_key(admin, acme)
        params = {"from": "2027-02-30T00:00:00Z"}
        answer = client.get(
            f"/v1/api-keys/{record.id}/usage", params=params, headers=factory.auth(admin)
        )
        assert answer.status_code == 422


class TestVerifyTags:
    @pytest.mark.parametrize(
        "tags",
        [
            ["no-equals"],
            ["=value"],
            ["k=" + "v" * 63],
            ["k=\u00e9"],
            [f"t{i}=x" for i in range(11)],
        ],
    )
    def test_422_for_a_tag_out_of_bounds(self, client, verifier, tags):
        answer = client.post(
            "/v1/keys/verify", json={"key": generate_api_key(), "tags": tags}, headers=verifier
        )
        assert answer.status_code == 422


def _key_id(factory, full_key):
    from sqlalchemy import select

    from keyplane.db.models import ApiKey

    digest = factory.secrets.api_key_digest(full_key)
    with factory.sessions() as session:
        return session.scalar(select(ApiKey.id).where(ApiKey.key_digest == digest))
