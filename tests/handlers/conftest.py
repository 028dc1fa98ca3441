"""The cast most handler tests share: one account, its admin and a member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from db.models import Role
from handlers.context import Runtime


@pytest.fixture
def acme(factory):
    return factory.account("acme")


@pytest.fixture
def admin(factory, acme):
    return factory.user(acme, Role.ADMIN)


@pytest.fixture
def member(factory, acme):
    return factory.user(acme, Role.MEMBER)


@pytest.fixture
def statements(app):
    """Every SQL statement the app's engine (all but verification's reader) sends."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(app.service.engine, "before_cursor_execute", record)
    yield seen
    event.remove(app.service.engine, "before_cursor_execute", record)


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
