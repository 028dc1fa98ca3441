"""Seed the FastAPI benchmark peer: one user ``bench`` and N API keys, fast.

Run from the repository root with ``BENCH_DATABASE_URL`` and ``BENCH_JWT_SECRET`` set::

    python -m bench.peers.fastapi_peer.seed --keys 1000000 --out /tmp/fastapi_peer.json

Drops and recreates the tables, bulk-inserts with Core ``insert()`` executemany in batches,
and writes the keys and token the load generator needs as JSON.
"""

import argparse
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import func, insert, select, text

from .app import ALGORITHM, SECRET_KEY, ApiKey, Base, Permission, User, engine, hash_key

BATCH = 10_000


def key_for(i: int) -> str:
    return "bk_" + hashlib.sha256(f"seed{i}".encode()).hexdigest()[:32]


def seed(n: int) -> dict[str, object]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    lacking = n // 2
    with engine.begin() as conn:
        conn.execute(insert(User), [{"id": 1, "username": "bench"}])
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            keys = [key_for(i) for i in range(start, stop)]
            conn.execute(
                insert(ApiKey),
                [
                    {
                        "id": i + 1,
                        "user_id": 1,
                        "description": f"bench key {i}",
                        "key_hash": hash_key(key),
                        "key_prefix": key[:8],
                        "created_at": now,
                    }
                    for i, key in zip(range(start, stop), keys, strict=True)
                ],
            )
            conn.execute(
                insert(Permission),
                [
                    {
                        "id": i + 1,
                        "api_key_id": i + 1,
                        "name": "other" if i == lacking else "readApplications",
                    }
                    for i in range(start, stop)
                ],
            )
        if engine.dialect.name == "postgresql":
            # Explicit ids bypass the serial sequences; move them past the seeded rows.
            for table, last_id in (("users", 1), ("api_keys", n), ("permissions", n)):
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v, :called)"),
                    {"t": table, "v": max(last_id, 1), "called": last_id > 0},
                )
        patch_id = conn.scalar(select(func.min(ApiKey.id)).where(ApiKey.user_id == 1))
    token = jwt.encode(
        {"sub": "bench", "exp": now + timedelta(days=1)}, SECRET_KEY, algorithm=ALGORITHM
    )
    return {
        "valid": key_for(n // 3),
        "lacking": key_for(lacking),
        "malformed": "bk_nope",
        "patch_id": patch_id,
        "token": token,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, required=True, help="number of API keys to insert")
    parser.add_argument("--out", required=True, help="where to write the info JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    info = seed(args.keys)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    elapsed = time.perf_counter() - started
    print(
        f"seeded {args.keys} keys into {engine.url.render_as_string(hide_password=True)} "
        f"in {elapsed:.1f}s -> {args.out}"
    )


if __name__ == "__main__":
    main()
