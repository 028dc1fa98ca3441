"""Schemathesis fuzzes every operation in-process, authenticated, with every check.

Each test gets a fresh account with an admin (whose token is sent) and a key of
theirs, so generated requests reach the handlers, not only the auth layer.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

import db.permissions
from db.models import Role

load_all_checks()
ALL_CHECKS = CHECKS.get_all()
FUZZ_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

CATALOG = [permission_id for permission_id, _ in db.permissions.DEFAULT_CATALOG]

schema = schemathesis.pytest.from_fixture("api_schema")
schema_without_key_header = schemathesis.pytest.from_fixture("api_schema_without_key_header")


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def api_schema_without_key_header(app):
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @api_schema.hook
    def map_headers(context, headers):
        # A generated X-API-Key is never a real key, so most cases would stop at the
        # 401 (the test above fuzzes that): without it they reach the handlers.
        if headers:
            headers.pop("X-API-Key", None)
        return headers

    @api_schema.hook
    def map_case(context, case):
        # Likewise, generated permission ids are rarely in the catalog: in valid
        # requests, use real ones (invalid ones stay as generated, to be refused).
        if isinstance(case.body, dict) and not case.meta.generation.mode.is_negative:
            for field in ("permissions", "flatPermissionsList"):
                if isinstance(case.body.get(field), list):
                    case.body[field] = CATALOG[: len(case.body[field])]
        return case

    return api_schema


@pytest.fixture
def admin_headers(factory):
    account = factory.account("fuzzed")
    admin = factory.user(account, Role.ADMIN)
    for _ in range(3):
        factory.api_key(admin, account)
    return factory.auth(admin)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms_to_the_spec(case, admin_headers):
    case.call_and_validate(headers=admin_headers, checks=ALL_CHECKS)


@schema_without_key_header.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms_past_authentication(case, admin_headers):
    case.call_and_validate(headers=admin_headers, checks=ALL_CHECKS)
