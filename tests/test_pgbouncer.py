"""Keyplane behind Debian's PgBouncer in transaction pooling mode
(``KEYPLANE_DB_POOLER=transaction``): the concurrency proofs' core, unchanged, through it.

A server connection is Keyplane's for one transaction only there: no prepared statement
and no session setting may outlive one (see docs/operations.md).
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from keyplane.db.engine import Limits, make_engine
from tests.live import live_server
from tests.servers import pgbouncer
from tests.test_concurrency import (  # the same tests, on a server behind PgBouncer
    TestConcurrentRotations,
    TestConcurrentWrites,
    TestRevocationUnderVerifyLoad,
)

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

__all__ = ["TestConcurrentRotations", "TestConcurrentWrites", "TestRevocationUnderVerifyLoad"]


@pytest.fixture(scope="module")
def live(db_kind, module_database_url):
    if db_kind != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")
    with (
        pgbouncer(module_database_url) as through_pgbouncer,
        live_server(through_pgbouncer, KEYPLANE_DB_POOLER="transaction") as live,
    ):
        yield live


def test_each_transaction_sets_its_timeouts_and_prepares_nothing(db_kind, fresh_database_url):
    """What the server's engine does behind the pooler: every transaction has the request
    budget's timeouts, whichever server connection it gets, and no statement is left
    prepared on one (the next transaction may be another client's)."""
    if db_kind != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections")
    limits = Limits(statement_seconds=3, transaction_pooler=True)
    with pgbouncer(fresh_database_url) as through_pgbouncer:
        engine = make_engine(through_pgbouncer, limits)
        try:
            for _ in range(12):  # past psycopg's threshold for preparing a statement
                with engine.begin() as connection:
                    timeouts = connection.execute(
                        text(
                            "SELECT current_setting('statement_timeout'), "
                            "current_setting('lock_timeout'), "
                            "current_setting('idle_in_transaction_session_timeout')"
                        )
                    ).one()
                    assert tuple(timeouts) == ("3s", "3s", "3s")
                    prepared = connection.scalar(
                        text("SELECT count(*) FROM pg_prepared_statements")
                    )
                    assert prepared == 0
            # Nothing stays behind on the server connections for the pooler's next client.
            plain = make_url(through_pgbouncer).set(drivername="postgresql")
            with psycopg.connect(plain.render_as_string(hide_password=False)) as other:
                assert other.execute("SHOW statement_timeout").fetchone() == ("0",)
        finally:
            engine.dispose()
