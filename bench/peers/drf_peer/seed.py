"""Seed the DRF benchmark peer: N keys made by the library's own manager, fast.

Run from the repository root with ``DJANGO_SETTINGS_MODULE=bench.peers.drf_peer.settings``
and ``BENCH_DATABASE_URL`` set::

    python -m bench.peers.drf_peer.seed --keys 1000000 --out /tmp/drf_peer.json

Migrates, flushes the database, then bulk-inserts ``APIKey`` rows whose ``id``/``prefix``/
``hashed_key`` come from ``APIKey.objects.assign_key`` (what ``create_key`` does before its
``save()``), and one grant per key. Writes the keys the load generator needs as JSON.
"""

import argparse
import json
import time

import django

BATCH = 5_000


def seed(n: int) -> dict[str, str]:
    from django.core.management import call_command
    from django.db import connection, transaction
    from rest_framework_api_key.models import APIKey

    from .models import KeyPermission

    call_command("migrate", interactive=False, verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    lacking, valid = n // 2, n // 3
    keys: dict[int, str] = {}
    prefixes: set[str] = set()
    with transaction.atomic():
        for start in range(0, n, BATCH):
            batch = []
            for i in range(start, min(start + BATCH, n)):
                api_key = APIKey(name=f"bench key {i}")
                key = APIKey.objects.assign_key(api_key)
                while api_key.prefix in prefixes:  # the prefix column is unique
                    key = APIKey.objects.assign_key(api_key)
                prefixes.add(api_key.prefix)
                if i in (valid, lacking):
                    keys[i] = key
                batch.append(api_key)
            APIKey.objects.bulk_create(batch, batch_size=BATCH)
            KeyPermission.objects.bulk_create(
                [
                    KeyPermission(
                        api_key=api_key,
                        name="other" if start + j == lacking else "readApplications",
                    )
                    for j, api_key in enumerate(batch)
                ],
                batch_size=BATCH,
            )
    # The verifying service's own key, as the library's docs teach (HasAPIKey).
    _, verifier = APIKey.objects.create_key(name="the API's verifier")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {
        "valid": keys[valid],
        "lacking": keys[lacking],
        "malformed": "nope.nope",
        "verifier": f"Api-Key {verifier}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, required=True, help="number of API keys to insert")
    parser.add_argument("--out", required=True, help="where to write the info JSON")
    args = parser.parse_args()
    if args.keys < 2:
        parser.error("--keys must be at least 2")
    django.setup()
    started = time.perf_counter()
    info = seed(args.keys)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    from django.db import connection

    print(
        f"seeded {args.keys} keys into {connection.vendor}:{connection.settings_dict['NAME']} "
        f"in {time.perf_counter() - started:.1f}s -> {args.out}"
    )


if __name__ == "__main__":
    main()
