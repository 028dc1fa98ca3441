"""Schemathesis hooks for fuzzing Keyplane, in-process and against a live server.

``schemathesis.toml`` loads them (``hooks = "tests.fuzzing"``) for ``schemathesis run``;
``tests/test_schemathesis.py`` registers them on its schemas. They make generated
requests reach the handlers instead of stopping at the door:

* ``X-API-Key`` is a documented header parameter and a security scheme: a generated
  value is never a real key, so it would make nearly every request a 401 (tested on
  its own). It is sent only when a test gives a real one.
* A key revoked with ``DELETE`` keeps its record: it stays readable (``status:
  revoked``) and its description editable, so that an audit still finds it. That one
  expectation of Schemathesis' ``use_after_free`` check, for those two operations,
  is set aside (``filter_failure``); every other failure of every check stands.
* In requests meant to be valid, ``x-account-id`` is left out (the caller's own account
  is the default: a generated id is another account, a 403), nor is the
  ``external_id`` filter of a key list (a generated one is nobody's: the list would be
  empty, and the stateful phase's links from it would lead nowhere), and permission
  ids are taken from the account's catalog (any other id is refused, by design).
* The fuzzing user (``KEYPLANE_FUZZ_USER_ID``) is never the target of a role change,
  a removal or a password reset: demoting or removing itself would end the run's own
  access to every admin operation (by design), and the rest of the run would only
  see 403s. Any other user id, existing or not, is fuzzed as generated.
* A key policy narrows what every later request may do, by design (a generated
  ``expiry_required`` makes every later key without an expiry a 403). So that one
  ``PUT /v1/account/policy`` does not shut the rest of a run out of the handlers, a
  request meant to be valid leaves keys free to live (its expiry limits are dropped;
  member permissions bind only members, not the fuzzing admin).
  The policy's own validation is still fuzzed (every negative case, and the member
  permissions of positive ones); its rules are tested in ``tests/handlers/test_account.py``.
* A new key's ``user_id`` names its owner, who must be a member (a generated id is
  nobody: 422), and a key's owner never changes (``PATCH`` refuses the field): in
  requests meant to be valid, the owner is the fuzzing admin, and a PATCH names none.
* ``meta`` is any JSON object, but every body refuses a string or an object key holding
  a NUL or a lone surrogate, by design (no database stores either; tested in
  ``tests/test_hostile_input.py``); the spec cannot say so of an object's keys. In
  requests meant to be valid, such strings are left out of ``meta``, and of the fields
  a leak report's items may carry beyond the four it names.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis
from pydantic import TypeAdapter, ValidationError
from schemathesis.openapi.checks import UseAfterFree

from keyplane import db

CATALOG = [permission_id for permission_id, _ in db.permissions.DEFAULT_CATALOG]
POLICY = "/v1/account/policy"
API_KEYS = "/v1/api-keys"
LEAKS = "/v1/leaks"
FUZZING_USER_VARIABLE = "KEYPLANE_FUZZ_USER_ID"
GENERATED_KEY_HEADER = "X-API-Key"
METRICS_TOKEN_VARIABLE = "KEYPLANE_FUZZ_METRICS_TOKEN"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REVOKING = {"DELETE /v1/api-keys/{item_id}", "DELETE /apikeys/{id}"}
STILL_ALLOWED_AFTER_REVOKING = {"GET", "PATCH"}


def without_generated_key(headers: dict[str, Any] | None) -> dict[str, Any] | None:
    if headers:
        headers.pop(GENERATED_KEY_HEADER, None)
    return headers


def never_the_fuzzing_user(case: Any) -> Any:
    fuzzing_user = os.environ.get(FUZZING_USER_VARIABLE)
    parameters = case.path_parameters or {}
    if fuzzing_user and _as_the_server_reads_it(parameters.get("user_id")) == int(fuzzing_user):
        # Set anew, not changed in place: a coverage case's parameters may be a copy.
        case.path_parameters = {**parameters, "user_id": int(fuzzing_user) + 1}
    return case


def _as_the_server_reads_it(value: Any) -> int | None:
    """A path id as the server's validation reads it: ``01``, ``+1`` and ``1`` are one user
    (a generated ``01`` once removed the fuzzing admin from its own account)."""
    try:
        return int(
            TypeAdapter(int).validate_python(value if isinstance(value, int) else str(value))
        )
    except ValidationError:
        return None


def valid_where_meant_to_be(case: Any) -> Any:
    if case.meta is None or case.meta.generation.mode.is_negative:
        return case
    if case.headers:
        case.headers.pop("x-account-id", None)
    if case.query:
        case.query.pop("external_id", None)
    if isinstance(case.body, dict):
        for field in ("permissions", "flatPermissionsList", "member_permissions"):
            if isinstance(case.body.get(field), list):
                case.body[field] = CATALOG[: len(case.body[field])]
        if isinstance(case.body.get("meta"), dict):
            case.body["meta"] = _storable(case.body["meta"])
        if case.operation.path == POLICY:
            case.body.pop("expiry_required", None)
            case.body.pop("max_key_lifetime_seconds", None)
        if "user_id" in case.body and case.operation.path.startswith(API_KEYS):
            _an_owner_who_is_a_member(case)
    if isinstance(case.body, list) and case.operation.path.startswith(LEAKS):
        # A report's items may carry fields Keyplane does not know (GitHub may add
        # some): generated ones are kept, but not with names no body may hold.
        case.body = [_storable(item) for item in case.body]
    return case


def _an_owner_who_is_a_member(case: Any) -> None:
    """A new key's owner must be a member of the account (else 422), and a key's owner
    never changes (PATCH: 422): a generated id is nobody, so that the create and the
    links that start at it are reached, the owner is the fuzzing admin itself."""
    fuzzing_user = os.environ.get(FUZZING_USER_VARIABLE)
    if case.operation.method.upper() == "POST" and fuzzing_user:
        case.body["user_id"] = int(fuzzing_user)
    else:
        case.body.pop("user_id")


def _storable(value: Any) -> Any:
    """``value`` without the strings every body refuses (a NUL, a lone surrogate)."""
    if isinstance(value, dict):
        return {k: _storable(v) for k, v in value.items() if _storable(k) is not None}
    if isinstance(value, list):
        return [_storable(item) for item in value if _storable(item) is not None]
    if isinstance(value, str) and ("\x00" in value or LONE_SURROGATE.search(value)):
        return None
    return value


@schemathesis.hook
def map_headers(context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    headers = without_generated_key(headers)
    # /metrics takes its own token (KEYPLANE_METRICS_TOKEN), not the user's.
    metrics_token = os.environ.get(METRICS_TOKEN_VARIABLE)
    if context.operation is not None and context.operation.path == "/metrics" and metrics_token:
        headers = {**(headers or {}), "Authorization": f"Bearer {metrics_token}"}
    return headers


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    return valid_where_meant_to_be(never_the_fuzzing_user(case))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Once more just before sending: some checks send a case of their own, built from
    the generated one before ``map_case`` (a coverage case's minimum ``user_id``, 1,
    once removed the fuzzing admin from its own account)."""
    never_the_fuzzing_user(case)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    revoked_key_read = (
        isinstance(failure, UseAfterFree)
        and failure.operation in REVOKING
        and failure.usage.split(" ", 1)[0] in STILL_ALLOWED_AFTER_REVOKING
    )
    return not revoked_key_read
