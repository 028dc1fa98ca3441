"""Hostile input, table-driven: every case sent to every operation that can take it.

Each answer must be the documented 4xx, in the shape of the surface it was sent to
(v1: FastAPI's ``{"detail": ...}``; the console: ``{"error": ...}``), quickly, and
the database must be exactly as it was.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from keyplane.db.models import ApiKey, Base, Role
from tests.factories import PASSWORD
from tests.live import live_server
from tests.test_errors import CONSOLE_BODY
from tests.test_spec import _operations

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Target:
    operation: str
    method: str
    path: str  # "{key}" stands for an existing key's id
    body: dict[str, Any]
    console: bool = False
    form: bool = False

    def encoded(self, body: dict[str, Any] | None = None) -> bytes:
        body = self.body if body is None else body
        if self.form:
            return "&".join(f"{k}={v}" for k, v in body.items()).encode()
        return json.dumps(body).encode()

    @property
    def media_type(self) -> str:
        return "application/x-www-form-urlencoded" if self.form else "application/json"

    @property
    def invalid(self) -> int:
        """The status of a request that does not match the schema, on this surface."""
        return 400 if self.console else 422


TARGETS = [
    Target("users.create", "POST", "/v1/users", {"username": "newcomer", "password": PASSWORD}),
    Target(
        "users.change_password",
        "POST",
        "/v1/users/me/password",
        {"current_password": "not-the-password", "new_password": "another-password"},
    ),
    # Any id will do for these: a hostile body is refused before the user is looked up.
    Target("users.update", "PATCH", "/v1/users/{key}", {"role": "member"}),
    Target("users.reset_password", "PUT", "/v1/users/{key}/password", {"new_password": PASSWORD}),
    Target("account.put_policy", "PUT", "/v1/account/policy", {"expiry_required": False}),
    Target("api_keys.create", "POST", "/v1/api-keys", {"description": "x"}),
    Target("api_keys.update", "PATCH", "/v1/api-keys/{key}", {"description": "x"}),
    Target("api_keys.rotate", "POST", "/v1/api-keys/{key}/rotate", {"grace_period_seconds": 0}),
    Target("keys.verify", "POST", "/v1/keys/verify", {"key": "kp_nothing"}),
    Target("api_keys.credits", "POST", "/v1/api-keys/{key}/credits", {"op": "set", "value": 1}),
    Target("identities.put", "PUT", "/v1/identities/cus_1", {"meta": {"plan": "pro"}}),
    Target("identities.update", "PATCH", "/v1/identities/cus_1", {"meta": None}),
    Target(
        "ratelimits.limit",
        "POST",
        "/v1/ratelimit",
        {"namespace": "signups", "identifier": "ip", "limit": 1, "duration_ms": 1000},
    ),
    Target(
        "ratelimits.put_override",
        "PUT",
        "/v1/ratelimit/signups/overrides/ip",
        {"limit": 1, "duration_ms": 1000},
    ),
    Target("permissions.create", "POST", "/v1/permissions", {"id": "readBilling"}),
    Target("console_keys.create", "POST", "/apikeys", CONSOLE_BODY, console=True),
    Target("console_keys.update", "PATCH", "/apikeys/{key}", CONSOLE_BODY, console=True),
    Target(
        "auth.token",
        "POST",
        "/v1/auth/token",
        {"grant_type": "password", "username": "nobody", "password": "x"},
        form=True,
    ),
]
JSON_TARGETS = [t for t in TARGETS if not t.form]


@dataclass(frozen=True)
class Case:
    """A hostile request: what it sends, and the answer it must get."""

    name: str
    build: Callable[[Target], tuple[dict[str, str], Any]]  # -> headers, content
    status: Callable[[Target], int]
    targets: list[Target] = field(default_factory=lambda: JSON_TARGETS)
    says: str | None = None  # what the answer's message must say (v1: one item's msg)


def _nested(depth: int) -> bytes:
    return b'{"description": ' + b"[" * depth + b"]" * depth + b"}"


def _number(literal: bytes) -> Callable[[Target], tuple[dict[str, str], bytes]]:
    """The target's own first field, holding a number that JSON cannot carry."""
    return lambda t: ({}, b'{"' + next(iter(t.body)).encode() + b'": ' + literal + b"}")


_NUMBERS = [
    ("NaN", b"NaN", "finite number"),
    ("Infinity", b"Infinity", "finite number"),
    ("-Infinity", b"-Infinity", "finite number"),
    ("1e400, past a double", b"1e400", "finite number"),
    ("a 5,000-digit number", b"9" * 5000, "int64"),
    ("a negative 5,000-digit number", b"-" + b"9" * 5000, "int64"),
    ("2**63, past int64", str(2**63).encode(), "int64"),
]


CASES = [
    Case("no Content-Type", lambda t: ({}, t.encoded()), lambda t: 415, TARGETS),
    Case(
        "text/plain",
        lambda t: ({"Content-Type": "text/plain"}, t.encoded()),
        lambda t: 415,
        TARGETS,
    ),
    Case(
        # JSON is UTF-8 whatever the charset says: Latin-1's bytes for "é" are not.
        "JSON in another charset",
        lambda t: (
            {"Content-Type": "application/json; charset=latin-1"},
            b'{"description": "caf\xe9"}',
        ),
        lambda t: t.invalid,
    ),
    Case(
        "invalid UTF-8",
        lambda t: ({}, b'{"description": "\xff\xfe"}'),
        lambda t: t.invalid,
    ),
    Case(
        "a lone surrogate",
        lambda t: ({}, b'{"description": "\\ud800"}'),
        lambda t: t.invalid,
    ),
    Case("a NUL character", lambda t: ({}, b'{"description": "a\\u0000b"}'), lambda t: t.invalid),
    Case("20,000-deep JSON", lambda t: ({}, _nested(20_000)), lambda t: t.invalid),
    Case("40-deep JSON", lambda t: ({}, _nested(40)), lambda t: t.invalid),
    Case(
        "a duplicate key",
        lambda t: ({}, t.encoded()[:-1] + b', "description": "twice", "description": "!"}'),
        lambda t: t.invalid,
    ),
    Case(
        "an unknown field",
        lambda t: ({}, t.encoded({**t.body, "expiresAt_": 1})),
        lambda t: t.invalid,
    ),
    Case("a JSON array", lambda t: ({}, b"[1, 2]"), lambda t: t.invalid),
    *(
        Case(name, _number(literal), lambda t: t.invalid, says=says)
        for name, literal, says in _NUMBERS
    ),
    Case("an empty body", lambda t: ({}, b""), lambda t: t.invalid),
    Case(
        "a list of 12,000 items",
        lambda t: ({}, json.dumps({"permissions": ["x"] * 12_000}).encode()),
        lambda t: t.invalid,
    ),
    Case(
        "a body over the limit",
        lambda t: ({}, b"{" + b" " * MAX_BODY + b"}"),
        lambda t: 413,
        TARGETS,
    ),
    Case(
        "a chunked body over the limit",
        lambda t: ({}, (b" " * 16 * 1024 for _ in range(6))),
        lambda t: 413,
        TARGETS,
    ),
    Case(
        "an unknown form field",
        lambda t: ({}, t.encoded({**t.body, "extra": "x"})),
        lambda t: 422,
        [t for t in TARGETS if t.form],
    ),
    Case(
        "an oversized form field",
        lambda t: ({}, t.encoded({**t.body, "username": "u" * 50_000})),
        lambda t: 422,
        [t for t in TARGETS if t.form],
    ),
    Case(
        "a NUL in a form field",
        lambda t: ({}, t.encoded({**t.body, "username": "a%00b"})),
        lambda t: 422,
        [t for t in TARGETS if t.form],
    ),
]
# Read-only fields may not be set, on either surface, any more than unknown ones.
READ_ONLY = ["id", "account_id", "user_id", "status", "key_prefix", "full_key", "created_at"]
READ_ONLY += ["last_used_at", "keyPrefix", "fullKey", "userId", "createdAt", "lastUsedAt"]
KEY_TARGETS = [t for t in JSON_TARGETS if t.operation.endswith(("keys.create", "keys.update"))]


def _cases() -> Iterator[Any]:
    for case in CASES:
        for target in case.targets:
            yield pytest.param(case, target, id=f"{target.operation}: {case.name}")


@pytest.fixture
def world(factory):
    """An account with an admin, a member and a key: what the database must still hold."""
    acme = factory.account()
    admin = factory.user(acme, Role.ADMIN)
    factory.user(acme, Role.MEMBER)
    key, _ = factory.api_key(
        admin, acme, description="untouched", permissions=("readApplications",)
    )
    return factory.auth(admin), key


def _snapshot(sessions) -> dict[str, Any]:
    with sessions() as session:
        # Verify counts are written by the background flusher, whenever it runs.
        counts = {
            table.name: session.scalar(select(func.count()).select_from(table))
            for table in Base.metadata.sorted_tables
            if table.name != "usage_counts"
        }
        keys = [
            (k.id, k.description, k.expires_at, k.revoked_at, k.key_digest, k.permissions)
            for k in session.scalars(select(ApiKey).order_by(ApiKey.id))
        ]
    return {"counts": counts, "keys": keys}


def _assert_shape(target: Target, response) -> None:
    body = response.json()
    if target.console:
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        return
    assert set(body) == {"detail"}, body
    if isinstance(body["detail"], list):
        for item in body["detail"]:
            # FastAPI's items: input and ctx where pydantic gives them.
            assert {"loc", "msg", "type"} <= set(item) <= {"loc", "msg", "type", "input", "ctx"}
            assert item["loc"][0] in ("body", "path", "query", "header"), item


@pytest.mark.parametrize(("case", "target"), list(_cases()))
def test_every_hostile_body_is_a_clear_4xx_and_changes_nothing(
    client, sessions, world, case, target
):
    auth, key = world
    headers, content = case.build(target)
    sent = {**auth, **headers}
    if case.name != "no Content-Type":
        sent.setdefault("Content-Type", target.media_type)
    before = _snapshot(sessions)
    started = time.monotonic()
    response = client.request(
        target.method, target.path.format(key=key.id), headers=sent, content=content
    )
    assert time.monotonic() - started < 3  # at once, not after a body timeout (10 s)
    assert response.status_code == case.status(target), response.text[:300]
    _assert_shape(target, response)
    if case.says is not None:
        detail = response.json().get("detail") or []
        messages = [response.json().get("error", "")] + [item["msg"] for item in detail]
        assert any(case.says in message for message in messages), response.text[:300]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert _snapshot(sessions) == before


@pytest.mark.parametrize(
    ("target", "field_name"),
    [
        pytest.param(target, name, id=f"{name}-{target.operation}")
        for name in READ_ONLY
        for target in KEY_TARGETS
        # The one exception: create's user_id names a new key's owner (an admin may name
        # another member; tests/handlers/test_api_keys.py shows both operations).
        if (name, target.operation)
        not in {
            ("user_id", "api_keys.create"),
            ("user_id", "api_keys.update"),
        }
    ],
)
def test_read_only_fields_are_refused_like_unknown_ones(
    client, sessions, world, target, field_name
):
    auth, key = world
    before = _snapshot(sessions)
    response = client.request(
        target.method,
        target.path.format(key=key.id),
        headers=auth,
        json={**target.body, field_name: 1},
    )
    assert response.status_code == target.invalid
    if target.console:
        assert response.json() == {"error": f"{field_name}: Extra inputs are not permitted"}
    else:
        assert response.json() == {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", field_name],
                    "msg": "Extra inputs are not permitted",
                    "input": 1,
                }
            ]
        }
    assert _snapshot(sessions) == before


def test_a_camel_case_slip_never_creates_a_key_that_never_expires(client, sessions, world):
    auth, _ = world
    before = _snapshot(sessions)
    response = client.post("/v1/api-keys", json={"expiresAt": "2030-01-01T00:00:00Z"}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"
    assert _snapshot(sessions) == before


@pytest.mark.parametrize("target", JSON_TARGETS, ids=lambda t: t.operation)
def test_media_types_are_compared_without_regard_to_case(client, world, target):
    auth, key = world
    response = client.request(
        target.method,
        target.path.format(key=key.id),
        headers={**auth, "Content-Type": "APPLICATION/JSON; Charset=UTF-8"},
        content=target.encoded(),
    )
    assert response.status_code not in (415, 422, 400, 500), response.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/api-keys/99999999999999999999", 422),
        # Any int64 is an id, as FastAPI reads one: a key no one has is a 404.
        ("/v1/api-keys/-1", 404),
        ("/v1/api-keys/0", 404),
        ("/v1/api-keys/abc", 422),
        ("/v1/api-keys/" + "9" * 2000, 422),
        ("/v1/api-keys/" + "9" * 5000, 414),
        ("/apikeys/99999999999999999999", 404),
        ("/apikeys/-1", 404),
        ("/apikeys/abc", 404),
        ("/apikeys/" + "9" * 2000, 400),
        ("/apikeys/" + "9" * 5000, 414),
    ],
)
def test_huge_negative_and_non_numeric_ids(client, sessions, world, path, status):
    auth, _ = world
    before = _snapshot(sessions)
    for method in ("GET", "DELETE"):
        response = client.request(method, path, headers=auth)
        assert response.status_code == status, response.text
        _assert_shape(Target("", method, path, {}, console=path.startswith("/apikeys")), response)
    assert _snapshot(sessions) == before


def test_an_account_header_that_is_not_an_id(client, world):
    auth, _ = world
    response = client.get("/v1/api-keys", headers={**auth, "x-account-id": "1 OR 1=1"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "x-account-id"]


@pytest.mark.parametrize("operation", [op["operationId"] for _, _, op in _operations()], ids=str)
def test_413_for_every_operation_before_its_body_is_read(client, world, operation):
    auth, key = world
    path, method = next((p, m) for p, m, op in _operations() if op["operationId"] == operation)
    path = path.replace("{item_id}", str(key.id)).replace("{id}", str(key.id))
    path = path.replace("{permission_id}", "readApplications")
    response = client.request(
        method.upper(),
        path,
        headers={**auth, "Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)},
        content=b"{}",
    )
    assert response.status_code == 413
    _assert_shape(
        Target(operation, method, path, {}, console=path.startswith("/apikeys")), response
    )


# What the ASGI app never sees: the HTTP layer's own refusals, on a live server.


@pytest.fixture(scope="module")
def live(module_database_url):
    with live_server(
        module_database_url,
        workers=1,
        KEYPLANE_HEADER_TIMEOUT_SECONDS="1",
        KEYPLANE_BODY_TIMEOUT_SECONDS="1",
    ) as live:
        yield live


def _raw(live, data: bytes, then: bytes = b"", pause: float = 0.0) -> bytes:
    port = int(live.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        if pause:
            time.sleep(pause)
            with contextlib.suppress(OSError):
                connection.sendall(then)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_cr_lf_in_a_header_is_a_400(live):
    answer = _raw(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


@pytest.mark.slow
def test_headers_that_trickle_are_cut_off_with_a_408(live):
    started = time.monotonic()
    answer = _raw(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Late: 1\r\n\r\n", 3)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_body_that_trickles_is_cut_off_with_a_408(live):
    body = json.dumps({"key": "kp_slow"}).encode()
    head = (
        b"POST /v1/keys/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + live.verifier_key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    answer = _raw(live, head + body[:5], body[5:], 3)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"detail"' in answer
