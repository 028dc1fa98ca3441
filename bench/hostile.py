"""How long the largest bodies of the worst shapes take to be refused.

    python -m bench.hostile        # writes bench/results/hostile.md

Validation must be linear in the size of its input: a body at the size limit, of any
shape, is answered within 50 ms on the benchmark's machine (it once took 22 s). Each
shape is sent to verify on a Keyplane served as ``keyplane serve`` serves it (SQLite,
1 worker), with ``KEYPLANE_VERIFY_OPEN`` so that anyone may send it, as an attacker on
a trusted network could; each is sent 20 times and the median answer
time is judged (the slowest is shown too: it includes the machine's hiccups).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from bench.run import BIN, RESULTS, SECRET, Contender, Request, machine, send, serving

LIMIT = 64 * 1024
SENDS = 20
GOAL_MS = 50


def _fill(make: Callable[[int], object]) -> str:
    """The largest body of this shape that fits within the limit."""
    low, high = 1, LIMIT
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(make(middle))) <= LIMIT:
            low = middle
        else:
            high = middle - 1
    return json.dumps(make(low))


SHAPES: dict[str, str] = {
    "permissions: many one-letter strings": _fill(
        lambda n: {"key": "kp_x", "permissions": ["a"] * n}
    ),
    "permissions: many strings with a NUL each": _fill(
        lambda n: {"key": "kp_x", "permissions": ["\u0000"] * n}
    ),
    "many unknown fields": _fill(lambda n: {"key": "kp_x"} | {f"f{i}": 0 for i in range(n)}),
    "one huge key string": _fill(lambda n: {"key": "k" * n}),
    "nested arrays, as deep as fits": "[" * (LIMIT // 2) + "]" * (LIMIT // 2),
    "many escaped surrogates": _fill(lambda n: {"key": "\ud800" * n}),
}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kpbench-") as folder:
        keyplane = Contender(
            "Keyplane",
            [str(BIN / "keyplane"), "serve", "--workers", "1", "--port", "{port}"],
            {
                "KEYPLANE_DATABASE_URL": f"sqlite:///{folder}/k.db",
                "KEYPLANE_SECRET_KEY": SECRET,
                "KEYPLANE_VERIFY_OPEN": "true",
            },
            "/healthz",
        )
        rows = []
        with serving(keyplane):
            for shape, body in SHAPES.items():
                times, statuses = [], set()
                for _ in range(SENDS):
                    started = time.perf_counter()
                    status, _ = send(keyplane, Request("POST", "/v1/keys/verify", body))
                    times.append((time.perf_counter() - started) * 1000)
                    statuses.add(status)
                rows.append(
                    (shape, len(body), sorted(statuses), statistics.median(times), max(times))
                )
    lines = [
        "# The largest bodies of the worst shapes",
        "",
        f"Written by `python -m bench.hostile`. Each body is sent {SENDS} times to "
        "`POST /v1/keys/verify` on `keyplane serve` (SQLite, 1 worker). Goal: every "
        f"shape answered within {GOAL_MS} ms (the median of the sends).",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine().items()) + ".",
        "",
        "| shape | bytes | status | median ms | slowest ms | within goal |",
        "|---|---:|---|---:|---:|:---:|",
    ]
    for shape, size, statuses, median, slowest in rows:
        met = "yes" if median <= GOAL_MS else "**no**"
        lines.append(f"| {shape} | {size:,} | {statuses} | {median:.1f} | {slowest:.1f} | {met} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hostile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(median <= GOAL_MS for *_, median, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
