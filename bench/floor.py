"""The framework's floors: Connexion's ``AsyncApp`` serving verify from the same spec,
with the same request validation.

* ``app``: a handler that does nothing. Keyplane's verify is measured against it: what
  the verify path adds to its framework.
* ``one_query``: a handler that makes the one indexed lookup a verify cannot do without
  (the key by its digest, in Keyplane's own database of the run) and nothing else: on
  PostgreSQL through an asyncpg pool, on SQLite inline on the event loop, as Keyplane
  does. What is left between it and Keyplane is Keyplane's own code.

Served as ``uvicorn bench.floor:app --workers 2`` (``bench.floor:one_query`` with
``BENCH_DATABASE_URL`` and ``BENCH_SECRET``).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import yaml
from connexion import AsyncApp
from connexion.resolver import Resolver
from sqlalchemy.engine import make_url

from keyplane.app import SPEC_PATH
from keyplane.db.crypto import Secrets
from keyplane.db.engine import Limits
from keyplane.db.lookups import PostgresLookups

VERIFY = "/v1/keys/verify"
SQL = "SELECT id FROM api_keys WHERE key_digest = {}"


async def verify(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    return {"valid": False, "code": "NOT_FOUND"}, 200


class _OneQuery:
    """The key's row by its digest: nothing judged, nothing written. On PostgreSQL it
    borrows Keyplane's own pool (``db.lookups``: prepared statements, generic plans, no
    reset round trip), so only the one lookup differs from nothing."""

    def __init__(self, url: str, secret: str) -> None:
        self.url = make_url(url)
        self.secrets = Secrets.derive(secret)
        self._postgres = PostgresLookups(self.url, Limits())
        self._sqlite: sqlite3.Connection | None = None

    async def __call__(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        digest = self.secrets.api_key_digest(body["key"])
        found = await self._fetch(digest)
        return {"valid": found, "code": "VALID" if found else "NOT_FOUND"}, 200

    async def _fetch(self, digest: str) -> bool:
        if self.url.get_backend_name() == "sqlite":
            if self._sqlite is None:
                self._sqlite = sqlite3.connect(self.url.database or "")
            return self._sqlite.execute(SQL.format("?"), (digest,)).fetchone() is not None
        pool = await self._postgres.pool()
        return await pool.fetchrow(SQL.format("$1"), digest) is not None


def _app(handler: Any) -> AsyncApp:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    spec["paths"] = {VERIFY: spec["paths"][VERIFY]}
    served = AsyncApp(__name__)
    served.add_api(spec, resolver=Resolver(lambda operation_id: handler), strict_validation=True)
    return served


_lookup = (
    _OneQuery(os.environ["BENCH_DATABASE_URL"], os.environ["BENCH_SECRET"])
    if "BENCH_DATABASE_URL" in os.environ
    else None
)


async def verify_by_one_query(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    assert _lookup is not None, "BENCH_DATABASE_URL and BENCH_SECRET name the database"
    return await _lookup(body)


app = _app(verify)
one_query = _app(verify_by_one_query)
