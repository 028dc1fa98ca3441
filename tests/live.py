"""A live ``keyplane serve`` with 2 workers, and real concurrent clients to load it.

Concurrency tests talk to a real server over loopback, as users do: several worker
processes, one database, many connections at once. Every loop here is bounded in
count and in time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from keyplane.db.permissions import VERIFY
from tests.conftest import TEST_SECRET
from tests.servers import keyplane_env, serving, wait_until_up

ADMIN = "admin"
PASSWORD = "live-admin-password"
# Enough catalog entries that concurrent bodies differ in their permission sets.
CATALOG = [f"perm{i}" for i in range(8)]
_names = itertools.count(1)


@dataclass
class Live:
    """A running server, its admin's credentials, and helpers that speak its API."""

    base: str
    server: subprocess.Popen[str]
    env: dict[str, str]
    token: str = ""
    account_id: int = 0
    verifier_key: str = ""  # an API key of the account holding keyplane.verify

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def verifier(self) -> dict[str, str]:
        """Verify's credential, as the account's API would hold it."""
        return {"Authorization": f"Bearer {self.verifier_key}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30, **kwargs)

    def async_client(self, connections: int = 64, timeout: float = 30) -> LoadClient:
        return LoadClient(self.base, connections, timeout)

    def create_key(self, **body: Any) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/v1/api-keys", json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def get_key(self, key_id: int) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v1/api-keys/{key_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def verify(self, full_key: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/v1/keys/verify", json={"key": full_key}, headers=self.verifier)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def add_user(self, role: str = "member") -> tuple[str, str]:
        """A new member of the account: the name they sign in with, and their password."""
        with self.client() as client:
            response = client.post(
                "/v1/users",
                json={"username": f"user{next(_names)}", "password": PASSWORD, "role": role},
                headers=self.auth,
            )
        assert response.status_code == 201, response.text
        return response.json()["username"], PASSWORD

    def sign_in(self, username: str, password: str = PASSWORD) -> str:
        """A token for ``username``, as the token endpoint gives it."""
        response = self.login(username, password)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def user_id(self, username: str) -> int:
        with self.client() as client:
            members = client.get("/v1/users", headers=self.auth).json()["items"]
        return next(member["id"] for member in members if member["username"] == username)

    def login(self, username: str, password: str) -> httpx.Response:
        with self.client() as client:
            return client.post(
                "/v1/auth/token",
                data={"grant_type": "password", "username": username, "password": password},
            )


def live_env(database_url: str, **extra: str) -> dict[str, str]:
    return keyplane_env(
        database_url,
        KEYPLANE_SECRET_KEY=TEST_SECRET,
        KEYPLANE_ADMIN_PASSWORD=PASSWORD,
        **extra,
    )


@contextmanager
def live_server(database_url: str, workers: int = 2, **extra: str) -> Iterator[Live]:
    """``keyplane serve --workers 2`` on a fresh database, its admin logged in."""
    env = live_env(database_url, **extra)
    with serving(env, workers=workers) as (base, server):
        wait_until_up(base, timeout=60)
        live = Live(base, server, env)
        response = live.login(ADMIN, PASSWORD)
        assert response.status_code == 200, response.text
        live.token = response.json()["access_token"]
        with live.client() as client:
            me = client.get("/v1/users/me", headers=live.auth).json()
            live.account_id = me["accounts"][0]["id"]
            for permission in CATALOG:
                client.post("/v1/permissions", json={"id": permission}, headers=live.auth)
        live.verifier_key = live.create_key(description="verifier", permissions=[VERIFY])[
            "full_key"
        ]
        yield live


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LoadClient:
    """Many concurrent requests from one process (aiohttp: httpx's pool spends a core on
    256 connections, and would measure itself instead of the server)."""

    def __init__(self, base: str, connections: int, timeout: float) -> None:
        self.base = base
        self._session = aiohttp.ClientSession(
            base_url=base,
            connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self._session.request(method, path, **kwargs) as response:
            return Answer(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("DELETE", path, **kwargs)


@dataclass
class Tally:
    """What a load run saw: statuses, transport errors, slowest answer."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0

    def record(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.slowest = max(self.slowest, seconds)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def __str__(self) -> str:
        return (
            f"statuses={dict(self.statuses)} errors={dict(self.errors)} slowest={self.slowest:.2f}s"
        )


async def timed(tally: Tally, request: Callable[[], Awaitable[Answer]]) -> Answer | None:
    started = time.monotonic()
    try:
        response = await request()
    except (aiohttp.ClientError, TimeoutError) as error:
        tally.errors[f"{type(error).__name__} after {time.monotonic() - started:.1f}s"] += 1
        return None
    tally.record(response.status_code, time.monotonic() - started)
    return response


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def probe(base: str, path: str, seconds: float, every: float = 0.2) -> Tally:
    """GET ``path`` every ``every`` s for ``seconds``: run it in a process of its own, so
    that a busy load generator does not delay the probe and blame the server for it."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = client.get(path)
            except httpx.HTTPError as error:
                tally.errors[type(error).__name__] += 1
            else:
                tally.record(response.status_code, time.monotonic() - started)
            time.sleep(every)
    return tally
