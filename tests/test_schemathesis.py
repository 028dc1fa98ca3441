"""Schemathesis fuzzes every operation in-process, authenticated, with every check.

The hooks of ``tests/fuzzing.py`` (loaded through ``schemathesis.toml``) make the
generated requests reach the handlers. The same fuzzing against a live server, with
the stateful phase, is ``tests/test_live_fuzzing.py``.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from keyplane.db.models import Role
from tests.conftest import METRICS_TOKEN
from tests.fuzzing import METRICS_TOKEN_VARIABLE

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

load_all_checks()
ALL_CHECKS = CHECKS.get_all()
FUZZ_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def api_schema(app, monkeypatch):
    monkeypatch.setenv(METRICS_TOKEN_VARIABLE, METRICS_TOKEN)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


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
