"""Keyplane answers the v1 contract's PATCH exactly as its FastAPI application does.

Each request of the corpus goes to the twin (``tests/twin.py``, the contract's FastAPI
app written from its document) and to Keyplane, each holding the same key. Both must
answer with the same status and the same body; what must differ is normalised (a
date-time is compared as the instant it names: Keyplane always answers UTC with ``Z``).
The only exceptions are ``DEVIATIONS``, each with its reason; the API guide
(``docs/api.md``) prints the same list, and a test holds the two together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import twin
from tests.docblocks import REPOSITORY

KEY_ID = "{id}"  # stands for the id of the key both hold


@dataclass(frozen=True)
class Request:
    path: str  # "{id}" stands for the key's id
    body: bytes
    content_type: str | None = "application/json"
    credential: bool = True
    query: str = ""

    def label(self) -> str:
        return f"{self.path}{self.query} {self.content_type} {self.body[:60]!r}" + (
            "" if self.credential else " (no credential)"
        )


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


_BODIES: list[bytes] = [
    _json(body)
    for body in [
        {},
        {"description": "renamed"},
        {"description": None},
        {"description": ""},
        {"description": 5},
        {"description": 5.5},
        {"description": True},
        {"description": ["a"]},
        {"description": {"a": 1}},
        {"expires_at": None},
        {"expires_at": "2031-01-01T00:00:00Z"},
        {"expires_at": "2031-01-01T00:00:00+02:00"},
        {"expires_at": "2031-01-01T00:00:00"},
        {"expires_at": "2031-01-01"},
        {"expires_at": "2031-01-01 10:00"},
        {"expires_at": "2031-01-01T10:00"},
        {"expires_at": "2031-01-01T10:00:00.123456"},
        {"expires_at": 1924992000},
        {"expires_at": 1924992000.5},
        {"expires_at": "1924992000"},
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": "2031-13-01T00:00:00"},
        {"expires_at": "2031-02-30T00:00:00"},
        {"expires_at": "2031-01-01T25:00:00"},
        {"expires_at": "not a date"},
        {"expires_at": ""},
        {"expires_at": True},
        {"expires_at": [1]},
        {"expires_at": {"a": 1}},
        {"description": "both", "expires_at": "2031-06-01T12:00:00Z"},
        {"description": 5, "expires_at": "nope"},
        {"description": None, "expires_at": None},
        {"description": "Zürich, 東京, emoji 🔑"},
        {"description": "  spaces  "},
        {"description": "line\nbreak"},
        {"expires_at": "2031-01-01T00:00:00.000Z"},
        {"expires_at": "2031-01-01t00:00:00z"},
        {"expires_at": "2031-01-01T00:00:00-05:30"},
        {"expires_at": "2031-01-01T00:00"},
        {"expires_at": "2031-1-1"},
        {"expires_at": "31-01-01"},
        {"expires_at": "2031-01-01T00:00:00+25:00"},
        {"expires_at": 0},
        {"expires_at": -1},
        {"expires_at": 1e11},
        {"expires_at": "0"},
        {"expires_at": None, "description": "cleared"},
        {"description": "x" * 1000},
    ]
] + [b"null", b"[]", b'"x"', b"123", b"true", b"{", b'{"description": }', b"{}x", b"[1, 2"]

_PATHS = [
    KEY_ID,
    "abc",
    "0",
    "-1",
    "99999999",
    f"{KEY_ID}.0",
    f"%20{KEY_ID}",
    f"0{KEY_ID}",
    "1.5",
    "1e3",
]

CORPUS: list[Request] = [
    *(Request(f"/v1/api-keys/{KEY_ID}", body) for body in _BODIES),
    *(Request(f"/v1/api-keys/{path}", _json({"description": "x"})) for path in _PATHS),
    *(Request(f"/v1/api-keys/{path}", _json({"description": 5})) for path in _PATHS),
    *(
        Request(f"/v1/api-keys/{path}", body, credential=False)
        for path in (KEY_ID, "abc")
        for body in (_json({"description": "x"}), _json({"description": 5}), b"{", b"null")
    ),
    *(
        Request(f"/v1/api-keys/{KEY_ID}", _json({"description": "typed"}), content_type=kind)
        for kind in (
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            "application/vnd.api+json",
            "APPLICATION/JSON",
        )
    ),
    Request(f"/v1/api-keys/{KEY_ID}", b"", content_type=None),
    Request(f"/v1/api-keys/{KEY_ID}", b""),
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": "q"}), query="?cache=1"),
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": "q"}), query="?trace=a&b=2"),
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": 5}), query="?cache=1"),
    Request("/v1/api-keys/abc", b"{", query="?cache=1"),
    Request("/v1/api-keys/abc", b"null"),
    Request("/v1/api-keys/0", b"null"),
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": 5}), content_type="text/plain"),
    # What Keyplane refuses on purpose (DEVIATIONS).
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": "x", "unknown": 1})),
    Request(f"/v1/api-keys/{KEY_ID}", b'{"description": "a\\u0000b"}'),
    Request(f"/v1/api-keys/{KEY_ID}", b'{"description": "x", "description": "y"}'),
    Request(f"/v1/api-keys/{KEY_ID}", b'{"expires_at": NaN}'),
    Request(f"/v1/api-keys/{KEY_ID}", _json({"description": "x" * 1001})),
    Request(f"/v1/api-keys/{2**63}", _json({"description": "x"})),
]


@dataclass(frozen=True)
class Deviation:
    reason: str
    applies: Callable[[Request], bool]


DEVIATIONS = [
    Deviation(
        "An unknown body field is refused (422 `extra_forbidden`), never silently ignored.",
        lambda r: b'"unknown"' in r.body,
    ),
    Deviation(
        "A string holding a NUL character is refused (no database stores one).",
        lambda r: b"\\u0000" in r.body,
    ),
    Deviation(
        "A JSON object with a duplicate key is refused (which of the two would count?).",
        lambda r: r.body.count(b'"description"') > 1,
    ),
    Deviation(
        "A number that is not finite (`NaN`, `Infinity`, `1e400`) is refused: JSON has none.",
        lambda r: b"NaN" in r.body,
    ),
    Deviation(
        "Every string has a bound (`description`: 1,000 characters).",
        lambda r: b'"' + b"x" * 1001 in r.body,
    ),
    Deviation(
        "An id outside int64 is refused (422): no id of Keyplane's, nor of its databases, is.",
        lambda r: str(2**63) in r.path,
    ),
    Deviation(
        "A body that is not JSON by its media type (`text/plain`) is a 415, as the spec says.",
        lambda r: r.content_type == "text/plain",
    ),
]


def _record(key_id: int, created: datetime) -> twin.APIKeyRecordRead:
    return twin.APIKeyRecordRead(
        id=key_id,
        key_prefix="kp_twin",
        user_id=1,
        status="active",
        created_at=created,
        expires_at=None,
        description="a key",
    )


def _normal(status: int, body: Any) -> Any:
    """The answer, with what must differ made alike: ids, the prefix, instants as UTC."""
    if status != 200 or not isinstance(body, dict):
        return body
    shown = dict(body)
    for field in ("id", "key_prefix", "user_id", "created_at"):
        shown[field] = field
    if shown.get("expires_at"):
        moment = datetime.fromisoformat(shown["expires_at"].replace("Z", "+00:00"))
        shown["expires_at"] = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    return shown


def _send(client: Any, request: Request, key_id: int, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    if request.credential and token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer = client.patch(
        request.path.replace(KEY_ID, str(key_id)) + request.query,
        content=request.body,
        headers=headers,
    )
    try:
        body = answer.json() if answer.content else None
    except ValueError:
        body = answer.text  # FastAPI's own 500 is plain text
    if answer.status_code == 401:
        assert answer.headers.get("www-authenticate") == "Bearer"
    return answer.status_code, _normal(answer.status_code, body)


def compare(client: Any, factory: Any, corpus: list[Request]) -> list[tuple[Request, Any, Any]]:
    """Each request to both; the pairs of answers, (status, body) each."""
    account = factory.account()
    admin = factory.user(account)
    token = factory.token(admin)
    pairs = []
    with TestClient(twin.app, raise_server_exceptions=False) as fastapi:
        for request in corpus:
            key, _ = factory.api_key(admin, account, description="a key")
            twin.KEYS.clear()
            twin.KEYS[key.id] = _record(key.id, key.created_at)
            theirs = _send(fastapi, request, key.id, "any-token")
            ours = _send(client, request, key.id, token)
            pairs.append((request, ours, theirs))
    return pairs


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 100, len(CORPUS)


def test_keyplane_answers_as_the_contracts_fastapi_app(client, factory):
    pairs = compare(client, factory, CORPUS)
    differ = [
        (request.label(), ours, theirs)
        for request, ours, theirs in pairs
        if ours != theirs and not any(d.applies(request) for d in DEVIATIONS)
    ]
    assert not differ, "\n".join(map(str, differ))
    for deviation in DEVIATIONS:
        # Each stays deliberate: it is in the corpus, and there Keyplane refuses it.
        shown = [(r, ours) for r, ours, _ in pairs if deviation.applies(r)]
        assert shown, deviation.reason
        assert all(ours[0] in (415, 422) for _, ours in shown), (deviation.reason, shown)


def test_the_api_guide_lists_the_deviations():
    guide = (REPOSITORY / "docs" / "api.md").read_text()
    for deviation in DEVIATIONS:
        assert deviation.reason in guide, deviation.reason


@pytest.fixture(autouse=True)
def _fresh_twin():
    yield
    twin.KEYS.clear()
