"""What the server refuses in a string, the spec says it refuses, and the reverse.

Every string property of every JSON request body, and every string parameter, is
walked. The JSON parser refuses a NUL and a lone surrogate in any string
(``keyplane.validation``), so the spec must too: each such property's pattern refuses a
NUL (the spec's description says the same of surrogates). Each string has a
``maxLength``; a value one longer is refused at its location, and one exactly as long
is not refused for its length. Sent to the running app, on both APIs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from keyplane.db.models import Role
from tests.test_examples import SPEC, _body_examples, _credentials, _parameters, _resolve
from tests.test_spec import _operations

NUL, SURROGATE = "a\x00b", "\\ud800"
SCANNER_TOKEN = "spec-agrees-leak-report-token-0123456789"


def _strings(schema: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], dict]]:
    """(location below the body, schema) of every string property, items included."""
    schema = _resolve(schema)
    if schema.get("type") == "string" or any(
        _resolve(s).get("type") == "string" for s in schema.get("anyOf", [])
    ):
        yield loc, schema
    for name, child in schema.get("properties", {}).items():
        yield from _strings(child, (*loc, name))
    if "items" in schema:
        yield from _strings(schema["items"], (*loc, 0))


def _json_bodies() -> Iterator[tuple[str, str, dict, dict, tuple[Any, ...], dict]]:
    for path, method, operation in _operations():
        for media_type, _, example in _body_examples(operation)[:1]:
            if media_type != "application/json":
                continue
            schema = operation["requestBody"]["content"][media_type]["schema"]
            for loc, string in _strings(schema):
                if loc:
                    yield path, method, operation, example, loc, string


CASES = list(_json_bodies())
IDS = [f"{op['operationId']}:{'.'.join(map(str, loc))}" for _, _, op, _, loc, _ in CASES]


def _alternatives(schema: dict) -> list[dict]:
    return [_resolve(s) for s in schema.get("anyOf", [])] or [schema]


def _refuses_nul(schema: dict) -> bool:
    """Whether every alternative the schema admits refuses a NUL: by its pattern, or by
    admitting only listed values or date-times."""
    return all(
        "enum" in s
        or s.get("format") == "date-time"
        or ("pattern" in s and re.search(s["pattern"], NUL) is None)
        for s in _alternatives(schema)
    )


def _max_length(schema: dict) -> int | None:
    """The longest string the schema admits (an enum's longest value bounds it too)."""
    lengths = [s["maxLength"] for s in _alternatives(schema) if "maxLength" in s]
    lengths += [len(v) for s in _alternatives(schema) for v in s.get("enum", []) if v]
    return max(lengths) if lengths else None


@pytest.mark.parametrize(
    ("path", "method", "operation", "example", "loc", "schema"), CASES, ids=IDS
)
def test_the_spec_says_what_the_server_refuses(path, method, operation, example, loc, schema):
    where = f"{operation['operationId']} body.{'.'.join(map(str, loc))}"
    assert _refuses_nul(schema), f"{where}: the server refuses a NUL; the spec's pattern must too"
    assert _max_length(schema) is not None, f"{where}: every string has a maxLength"


def _set(body: Any, loc: tuple[Any, ...], raw: str) -> str:
    """``body`` as JSON, with the string at ``loc`` replaced by the raw JSON ``raw``."""
    marker = "\x01marker\x01"
    copy = json.loads(json.dumps(body))
    node = copy
    for step in loc[:-1]:
        if isinstance(step, int):
            if not isinstance(node, list) or not node:
                return ""
            node = node[0]
        else:
            node = node.setdefault(step, {} if not isinstance(step, int) else [])
    if isinstance(loc[-1], int):
        if not isinstance(node, list):
            return ""
        node[:] = [marker]
    else:
        node[loc[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), raw)


@pytest.mark.parametrize(
    ("path", "method", "operation", "example", "loc", "schema"), CASES, ids=IDS
)
def test_the_server_refuses_what_the_spec_says(
    app, client, factory, path, method, operation, example, loc, schema
):
    account = factory.account()
    admin = factory.user(account, Role.ADMIN)
    member = factory.user(account, Role.MEMBER)
    key, _ = factory.api_key(admin, account)
    url = path.format(
        item_id=key.id,
        id=key.id,
        webhook_id=key.id,
        user_id=member.id,
        external_id="cus_1",
        namespace="signups",
        identifier="203.0.113.7",
    )
    headers = _credentials(operation, factory, admin) | {"Content-Type": "application/json"}
    if operation["operationId"] == "leaks.report":  # the operator's scanners' own token
        object.__setattr__(app.service.runtime, "leak_report_token", SCANNER_TOKEN)
        headers["Authorization"] = f"Bearer {SCANNER_TOKEN}"
    try:
        _refuses(client, url, method, headers, path, example, loc, schema)
    finally:
        object.__setattr__(app.service.runtime, "leak_report_token", None)


def _refuses(client, url, method, headers, path, example, loc, schema) -> None:
    console = path.startswith("/apikeys")
    limit = _max_length(schema)
    assert limit is not None
    sent = {
        "a NUL": (json.dumps(NUL), True),
        "a lone surrogate": (f'"{SURROGATE}"', True),
        "one too long": (json.dumps("x" * (limit + 1)), True),
        "as long as it may be": (json.dumps("x" * limit), False),
    }
    for what, (raw, refused) in sent.items():
        body = _set(example, loc, raw)
        if not body:
            continue
        answer = client.request(method.upper(), url, content=body, headers=headers)
        named = _names(answer.json() if answer.content else {}, loc, console)
        if refused:
            assert answer.status_code == (400 if console else 422), (what, answer.text)
            assert named, (what, answer.text)
        else:
            # Refused perhaps for what the value means, never for its length.
            assert not (named and "at most" in answer.text), (what, answer.text)


def _names(answer: Any, loc: tuple[Any, ...], console: bool) -> bool:
    """Whether an error answer points at ``loc``."""
    if not isinstance(answer, dict):  # an answer, not an error (a leak report's feedback)
        return False
    if console:
        return str(loc[0]) in answer.get("error", "")
    return any(
        tuple(item["loc"][1 : 1 + len(loc)]) == loc
        for item in answer.get("detail", [])
        if isinstance(item, dict)
    )


STRING_PARAMETERS = [
    (path, operation, parameter)
    for path, _, operation in _operations()
    for parameter in _parameters(path, operation)
    if _resolve(parameter["schema"]).get("type") == "string"
]


@pytest.mark.parametrize(
    ("path", "operation", "parameter"),
    STRING_PARAMETERS,
    ids=[f"{op['operationId']}:{p['name']}" for _, op, p in STRING_PARAMETERS],
)
def test_every_string_parameter_is_bounded(path, operation, parameter):
    schema = _resolve(parameter["schema"])
    assert "maxLength" in schema or "enum" in schema, f"{parameter['name']}: no bound"


def test_the_spec_tells_of_surrogates_and_nul():
    assert "surrogate" in SPEC["info"]["description"]


def test_every_body_is_judged_by_a_model_of_the_specs_own_fields():
    """The pydantic models come from the spec at start-up; should that ever change
    (a model written by hand, one generated in the build), this catches the drift."""
    from connexion.spec import Specification

    from keyplane.request_models import build

    resolved = Specification.from_dict(SPEC)
    operations = build(resolved, "/apikeys")
    checked = 0
    for path, method, operation in _operations():
        for media_type, content in (
            resolved["paths"][path][method].get("requestBody", {}).get("content", {}).items()
        ):
            schema = _resolve(content["schema"])
            model = operations[operation["operationId"]].bodies[media_type].adapter.json_schema()
            assert set(model.get("properties", {})) == set(schema.get("properties", {})), path
            assert set(model.get("required", [])) == set(schema.get("required", [])), path
            forbids = schema.get("additionalProperties") is False
            assert (model.get("additionalProperties") is False) == forbids, path
            checked += 1
    assert checked >= 12
