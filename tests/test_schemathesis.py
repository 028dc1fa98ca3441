"""Schemathesis fuzzes every operation in-process, authenticated, with every check.

Each test gets a fresh account with an admin (the Authorization header below) and a
key of theirs, so generated requests reach the handlers, not only the auth layer.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from db.models import Role

load_all_checks()
ALL_CHECKS = CHECKS.get_all()

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture
def admin_headers(factory):
    account = factory.account("fuzzed")
    admin = factory.user(account, Role.ADMIN)
    factory.api_key(admin, account)
    return factory.auth(admin)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_spec(case, admin_headers):
    case.call_and_validate(headers=admin_headers, checks=ALL_CHECKS)
