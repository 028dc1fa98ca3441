"""Start-up is safe in parallel: servers started together on an empty database all
come up, migrate it once and create one first admin between them."""

from __future__ import annotations

from contextlib import ExitStack

import httpx
import pytest
from sqlalchemy import func, select

from keyplane.db.engine import make_engine
from keyplane.db.models import Account, User
from tests.live import live_env
from tests.servers import serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser


def test_servers_started_together_on_an_empty_database_all_come_up(fresh_database_url):
    env = live_env(fresh_database_url)
    with ExitStack() as stack:
        servers = [stack.enter_context(serving(env, workers=2)) for _ in range(3)]
        for base, server in servers:
            wait_until_up(base, timeout=60)
            assert server.poll() is None
            assert httpx.get(f"{base}/readyz").status_code == 200
    engine = make_engine(fresh_database_url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Account)) == 1
        assert connection.scalar(select(func.count()).select_from(User)) == 1
    engine.dispose()
