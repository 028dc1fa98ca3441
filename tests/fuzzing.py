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
  is the default: a generated id is another account, a 403) and permission ids are
  taken from the account's catalog (any other id is refused, by design).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from schemathesis.openapi.checks import UseAfterFree

import db.permissions

CATALOG = [permission_id for permission_id, _ in db.permissions.DEFAULT_CATALOG]
GENERATED_KEY_HEADER = "X-API-Key"
METRICS_TOKEN_VARIABLE = "KEYPLANE_FUZZ_METRICS_TOKEN"
REVOKING = {"DELETE /v1/api-keys/{item_id}", "DELETE /apikeys/{id}"}
STILL_ALLOWED_AFTER_REVOKING = {"GET", "PATCH"}


def without_generated_key(headers: dict[str, Any] | None) -> dict[str, Any] | None:
    if headers:
        headers.pop(GENERATED_KEY_HEADER, None)
    return headers


def valid_where_meant_to_be(case: Any) -> Any:
    if case.meta is None or case.meta.generation.mode.is_negative:
        return case
    if case.headers:
        case.headers.pop("x-account-id", None)
    if isinstance(case.body, dict):
        for field in ("permissions", "flatPermissionsList"):
            if isinstance(case.body.get(field), list):
                case.body[field] = CATALOG[: len(case.body[field])]
    return case


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
    return valid_where_meant_to_be(case)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    revoked_key_read = (
        isinstance(failure, UseAfterFree)
        and failure.operation in REVOKING
        and failure.usage.split(" ", 1)[0] in STILL_ALLOWED_AFTER_REVOKING
    )
    return not revoked_key_read
