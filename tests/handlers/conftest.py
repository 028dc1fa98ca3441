"""The cast most handler tests share: one account, its admin and a member."""

from __future__ import annotations

import pytest

from db.models import Role


@pytest.fixture
def acme(factory):
    return factory.account("acme")


@pytest.fixture
def admin(factory, acme):
    return factory.user(acme, Role.ADMIN)


@pytest.fixture
def member(factory, acme):
    return factory.user(acme, Role.MEMBER)
