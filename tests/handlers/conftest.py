"""The cast most handler tests share: one account, its admin and a member."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from keyplane.app import create_app
from keyplane.db.audit import CLIENT_ADDRESS
from keyplane.db.models import Role
from keyplane.handlers.context import Runtime
from tests.conftest import REDIS_URLS


@pytest.fixture
def acme(factory):
    return factory.account("acme")


@pytest.fixture
def admin(factory, acme):
    return factory.user(acme, Role.ADMIN)


@pytest.fixture
def member(factory, acme):
    return factory.user(acme, Role.MEMBER)


MAIN = threading.main_thread()


@pytest.fixture
def statements(app):
    """Every SQL statement the app's engine (all but verification's reader) sends while
    the test runs. The last-use flusher's timer is stopped meanwhile, and earlier tests'
    notes dropped (their keys are gone; an id may be this test's key's): a tick landing
    mid-request would count its statements as the request's."""
    app.service.runtime.usage.take()
    app.service.flusher.stop()
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        # A request's own (its client's address is bound) and the test's, never the
        # server's background threads' (webhook sends, purges) that a slow machine may
        # schedule meanwhile.
        if CLIENT_ADDRESS.get() is not None or threading.current_thread() is MAIN:
            seen.append(statement)

    event.listen(app.service.engine, "before_cursor_execute", record)
    yield seen
    event.remove(app.service.engine, "before_cursor_execute", record)
    app.service.flusher.start()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def move(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    """The service's one clock (``Runtime.now``), set by the test."""
    moving = Clock(datetime(2027, 1, 30, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(Runtime, "now", staticmethod(lambda: moving.now))
    return moving


@pytest.fixture(scope="session")
def redis_client(settings, engine, db_kind):
    """A client of the service as ``KEYPLANE_REDIS_URL`` makes it: windows in Redis."""
    app = create_app(replace(settings, redis_url=REDIS_URLS[db_kind]))
    with app.test_client() as client:
        # One webhook sender at a time: the webhook tests stop the main app's and drive
        # their own; this app's would race them for what they mean to send.
        app.service.sender.stop()
        yield client
        app.service.sender.start()  # for its lifespan's end, which stops it


@pytest.fixture(params=["database", "redis"])
def counting(request, client):
    """A client of the service counting rate-limit windows in the database (the
    default) or in Redis (emptied first; skipped where Redis is not running)."""
    if request.param == "database":
        return client
    request.getfixturevalue("redis_url")
    return request.getfixturevalue("redis_client")


@pytest.fixture
def verifier(factory, acme, admin):
    """Headers that may verify acme's keys (its admin's token)."""
    return factory.verifier(acme)
