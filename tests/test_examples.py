"""The spec's examples: one at least for every operation, each valid and usable as is.

Issue 12, "a first hour without surprises": Swagger UI fills "Try it out" with these
examples (a request body, and every parameter that has one, even an optional one), so
each must match its schema, must not set an expiry that has passed or soon will, and
must be accepted by the service exactly as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from keyplane.app import SPEC_PATH
from keyplane.db.models import Role
from tests.test_spec import _operations

SPEC = yaml.safe_load(SPEC_PATH.read_text())
# A key made from an example should outlive a first hour by far, not by a day.
WELL_AHEAD = timedelta(days=365)
EXPIRY_FIELDS = {"expires_at", "expiresAt"}
# Refusals of a request's shape: the console answers 400, the v1 API 422.
REFUSED_FOR_ITS_SHAPE = {400, 415, 422}
EXAMPLE_CUSTOMER = "cus_4f2a"  # the ExternalId parameter's example
EXAMPLE_NAMESPACE, EXAMPLE_IDENTIFIER = "signups", "203.0.113.7"  # and the overrides'


def _follow(ref: str) -> Any:
    node: Any = SPEC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _follow(node["$ref"])
    return node


def _values(holder: dict[str, Any]) -> list[tuple[str, Any]]:
    """A media type's, parameter's or schema's examples, by name."""
    found = [("example", holder["example"])] if "example" in holder else []
    examples = holder.get("examples", {})
    return found + [(name, _resolve(example)["value"]) for name, example in examples.items()]


def _parameters(path: str, operation: dict[str, Any]) -> list[dict[str, Any]]:
    shared = SPEC["paths"][path].get("parameters", [])
    return [_resolve(p) for p in [*shared, *operation.get("parameters", [])]]


def _parameter_example(parameter: dict[str, Any]) -> Any:
    """What Swagger UI fills in: the parameter's example, else its schema's, else the default."""
    schema = _resolve(parameter["schema"])
    for holder in (parameter, schema):
        if values := _values(holder):
            return values[0][1]
    return schema.get("default")


def _body_examples(operation: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(media type, example name, value) of the request body, media type's or schema's."""
    content = _resolve(operation.get("requestBody", {})).get("content", {})
    return [
        (media_type, name, value)
        for media_type, media in content.items()
        for name, value in (_values(media) or _values(_resolve(media["schema"])))
    ]


def _response_examples(operation: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (status, name, value)
        for status, response in operation["responses"].items()
        for media in _resolve(response).get("content", {}).values()
        for name, value in _values(media)
    ]


def _example_sites(node: Any, where: str = "#") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """Every example in the spec: (where, the value, the schema it must match)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _example_sites(item, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    if "example" in node or "examples" in node:
        # A media type, parameter or header holds its schema; a schema is its own.
        schema = node.get("schema", {k: v for k, v in node.items() if k != "example"})
        for name, value in _values(node):
            yield f"{where}/{name}", value, schema
    for key, child in node.items():
        if key in {"example", "examples"}:
            continue
        if key == "properties":  # names of properties, not keywords
            for name, schema in child.items():
                yield from _example_sites(schema, f"{where}/properties/{name}")
        else:
            yield from _example_sites(child, f"{where}/{key}")


def _expiries(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in EXPIRY_FIELDS and isinstance(child, str) and child:
                yield child
            yield from _expiries(child)
    elif isinstance(value, list):
        for item in value:
            yield from _expiries(item)


def _named_example_maps(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "examples" and isinstance(child, dict):
                yield f"{where}/examples", child
            elif key != "properties":
                yield from _named_example_maps(child, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _named_example_maps(item, f"{where}/{index}")


def test_every_tag_has_a_description() -> None:
    declared = {tag["name"]: tag.get("description", "") for tag in SPEC["tags"]}
    used = {tag for _, _, operation in _operations() for tag in operation.get("tags", [])}
    assert used <= set(declared), f"undeclared tags: {used - set(declared)}"
    assert all(description.strip() for description in declared.values()), declared


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [(method, path, operation) for path, method, operation in _operations()],
    ids=[operation["operationId"] for _, _, operation in _operations()],
)
def test_every_operation_has_an_example(method, path, operation) -> None:
    if "requestBody" in operation:
        assert _body_examples(operation), f"{method} {path}: no request body example"
    else:
        parameters = [p for p in _parameters(path, operation) if _values(p)]
        assert parameters or _response_examples(operation), f"{method} {path}: no example"


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [(method, path, operation) for path, method, operation in _operations()],
    ids=[operation["operationId"] for _, _, operation in _operations()],
)
def test_every_success_with_a_body_shows_an_example(method, path, operation) -> None:
    for status, response in operation["responses"].items():
        content = _resolve(response).get("content")
        if status.startswith("2") and content:
            assert any(_values(media) for media in content.values()), f"{method} {path} {status}"


SITES = list(_example_sites(SPEC))


@pytest.mark.parametrize(("where", "value", "schema"), SITES, ids=[site[0] for site in SITES])
def test_every_example_matches_its_schema(where, value, schema) -> None:
    # $refs point into the spec: give the schema the spec's components to find them in.
    validator = OAS30Validator(
        {**schema, "components": SPEC["components"]}, format_checker=oas30_format_checker
    )
    errors = [
        f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(value)
    ]
    assert not errors, f"{where}: {errors}"


def test_every_named_example_says_what_it_shows() -> None:
    for where, node in _named_example_maps(SPEC):
        for name, example in node.items():
            assert _resolve(example).get("summary"), f"{where}/{name} has no summary"


def test_every_expiry_in_an_example_is_well_in_the_future() -> None:
    expiries = [(where, e) for where, value, _ in SITES for e in _expiries(value)]
    assert len(expiries) >= 10, expiries  # the walk finds them: keys, verify, the console
    soon = datetime.now(UTC) + WELL_AHEAD
    past = [(where, e) for where, e in expiries if datetime.fromisoformat(e) <= soon]
    assert not past, f"expiries less than a year ahead; move them on: {past}"


def _success(operation: dict[str, Any]) -> int:
    return min(int(status) for status in operation["responses"] if status.startswith("2"))


def _credentials(operation: dict[str, Any], factory, admin) -> dict[str, str]:
    """What Swagger UI sends once authorised: the token, where the operation asks for one."""
    return factory.auth(admin) if operation.get("security", SPEC.get("security")) else {}


BODY_CASES = [
    pytest.param(method, path, operation, media_type, body, id=f"{operation['operationId']}-{name}")
    for path, method, operation in _operations()
    for media_type, name, body in _body_examples(operation)
]


@pytest.mark.parametrize(("method", "path", "operation", "media_type", "body"), BODY_CASES)
def test_try_it_out_accepts_every_request_body_example_as_it_is(
    client, factory, method, path, operation, media_type, body
) -> None:
    account = factory.account()
    if operation["operationId"] == "users.change_password":
        # The example's current password is the signed-in user's.
        admin = factory.user(account, Role.ADMIN, password=body["current_password"])
    else:
        admin = factory.user(account, Role.ADMIN)
    member = factory.user(account, Role.MEMBER)
    key, _ = factory.api_key(
        admin, account, description="Billing service, staging", permissions=("readApplications",)
    )
    if operation["operationId"].startswith("identities."):
        factory.identity(account, EXAMPLE_CUSTOMER)  # what the example replaces or changes
    if operation["operationId"] == "ratelimits.put_override":
        # The override the example replaces (200; a new one is 201).
        first = client.put(
            path.format(namespace=EXAMPLE_NAMESPACE, identifier=EXAMPLE_IDENTIFIER),
            json=body,
            headers=factory.auth(admin),
        )
        assert first.status_code == 201, first.text
    if operation["operationId"] == "auth.token":
        # Only the example's own user can sign in with it (a first hour's admin is `admin`).
        factory.user(account, Role.ADMIN, username=body["username"], password=body["password"])
    webhook_id = 0
    if operation["operationId"] in {"webhooks.update", "webhooks.rotate_secret"}:
        webhook_id = factory.webhook(account)  # the endpoint the example changes
    sent = {"json": body} if media_type == "application/json" else {"data": body}

    response = client.request(
        method.upper(),
        # Ids that exist: the key and the member made above.
        path.format(
            item_id=key.id,
            id=key.id,
            webhook_id=webhook_id,
            user_id=member.id,
            external_id=EXAMPLE_CUSTOMER,
            namespace=EXAMPLE_NAMESPACE,
            identifier=EXAMPLE_IDENTIFIER,
        ),
        headers=_credentials(operation, factory, admin),
        **sent,
    )

    assert response.status_code not in REFUSED_FOR_ITS_SHAPE, response.text
    if operation["operationId"].startswith("leaks."):
        # GitHub's signature or the operator scanners' token, which Try it out has not:
        # the example's shape is accepted, and the report refused for who sent it.
        assert response.status_code == 401, response.text
        return
    assert response.status_code == _success(operation), response.text
    if response.status_code == 204:
        return
    answer = response.json()
    if operation["operationId"] == "keys.verify":
        # A well-formed key that nobody was issued: verify answers 200 NOT_FOUND for it.
        assert (answer["valid"], answer["code"]) == (False, "NOT_FOUND")
        return
    # What the example set reads back as it was sent (permissions are sorted, as here),
    # but a new user's name, which is named in its account.
    if operation["operationId"] == "users.create":
        body = body | {"username": f"{body['username']}@{account.id}"}
    echoed = {field for field in body if isinstance(answer, dict) and field in answer}
    assert {f: answer[f] for f in echoed} == {f: body[f] for f in echoed}


PARAMETER_CASES = [
    pytest.param(method, path, operation, id=operation["operationId"])
    for path, method, operation in _operations()
    if any(_values(p) or _values(_resolve(p["schema"])) for p in _parameters(path, operation))
]


@pytest.mark.parametrize(("method", "path", "operation"), PARAMETER_CASES)
def test_try_it_out_accepts_every_parameter_example_as_it_is(
    client, factory, method, path, operation
) -> None:
    account = factory.account()
    admin = factory.user(account, Role.ADMIN)
    factory.api_key(admin, account, description="Billing service, production")
    prefilled: dict[str, dict[str, str]] = {"path": {}, "query": {}, "header": {}}
    for parameter in _parameters(path, operation):
        value = _parameter_example(parameter)
        if value is not None:
            prefilled[parameter["in"]][parameter["name"]] = str(value)
    bodies = _body_examples(operation)
    sent = {"json": bodies[0][2]} if bodies else {}

    response = client.request(
        method.upper(),
        path.format(**prefilled["path"]),
        params=prefilled["query"],
        headers=prefilled["header"] | _credentials(operation, factory, admin),
        **sent,
    )

    # Example ids may name no key of this account (404); never a request of the wrong shape.
    assert response.status_code not in REFUSED_FOR_ITS_SHAPE, response.text
    assert str(response.status_code) in operation["responses"], response.text
