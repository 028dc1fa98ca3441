"""The benchmark's results: ``bench/results/results.json`` (every figure), a Markdown
table with the ratios the targets are about, and a chart. A run adds its figures to those of earlier
runs on other databases or data sizes, and replaces those it measured again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.figures import (
    BASELINE,
    FLOOR_QUERY,
    KEYPLANE_OPEN,
    KEYPLANE_REDIS,
    KEYPLANE_SMALL,
    LIMITED,
    LIMITED_SPREAD,
    SMALL,
    VERIFY,
    VERIFY_SPREAD,
    Figure,
)

KEYPLANE = "Keyplane"
PEERS = ("FastAPI + SQLAlchemy", "DRF + drf-api-key")
FLOOR = "AsyncApp no-op (floor)"
PATCH = "PATCH /v1/api-keys/{item_id}"
PATCH_WRITING = "PATCH, a new description each time"
LIST = "list keys (20)"
RSS_LIMIT_MB = 150
# The chart is the benchmark page's (docs/benchmark.md), so the docs site carries it.
CHART = Path(__file__).resolve().parent.parent / "docs" / "assets" / "verify.png"


def write(
    folder: Path,
    figures: list[Figure],
    rss: dict[str, dict[str, float]],
    machine: dict[str, str],
    options: dict[str, Any],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    earlier = json.loads(path.read_text()) if path.exists() else {"figures": [], "rss_mb": {}}
    measured = {(f.database, f.keys) for f in figures}
    kept = [f for f in earlier["figures"] if (f["database"], f["keys"]) not in measured]
    every = [Figure(**f) for f in kept] + figures
    results = {
        "machine": machine,
        "options": {k: v for k, v in options.items() if k != "postgres"},
        "figures": [asdict(f) for f in every],
        "rss_mb": earlier["rss_mb"] | rss,
    }
    path.write_text(json.dumps(results, indent=2) + "\n")
    (folder / "README.md").write_text(_markdown(every, results["rss_mb"], machine))
    _chart(every, CHART)


def _index(figures: list[Figure]) -> dict[tuple[str, int, str, str], Figure]:
    return {(f.database, f.keys, f.operation, f.contender): f for f in figures}


def _markdown(
    figures: list[Figure], rss: dict[str, dict[str, float]], machine: dict[str, str]
) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench.run` (see `docs/benchmark.md`). Every server "
        "runs 2 workers on 127.0.0.1; `wrk -t1 -c32`, the contenders of an operation "
        "alternated within each round; figures are medians of the rounds.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
    ]
    at = _index(figures)
    for database, keys in sorted({(f.database, f.keys) for f in figures}):
        lines += [f"## {database}, {keys:,} keys", ""]
        lines += ["| operation | contender | req/s | p50 ms | p99 ms | non-2xx | socket errors |"]
        lines += ["|---|---|---:|---:|---:|---:|---:|"]
        for f in sorted(
            (f for f in figures if (f.database, f.keys) == (database, keys)),
            key=lambda f: (f.operation, -f.rps),
        ):
            lines.append(
                f"| {f.operation} | {f.contender} | {f.rps:,.0f} | {f.p50_ms:.1f} | "
                f"{f.p99_ms:.1f} | {f.non_2xx} | {f.socket_errors} |"
            )
        memory = rss.get(f"{database}, {keys:,} keys", {})
        lines += ["", "Peak RSS per worker (MB): "]
        lines[-1] += ", ".join(f"{name} {mb:.0f}" for name, mb in memory.items()) + "."
        lines += ["", "| target | goal | measured | met |", "|---|---:|---:|:---:|"]
        for name, value, goal, at_most in _targets(at, database, keys, rss):
            if value is not None:
                met = value <= goal if at_most else value >= goal
                sign = "≤" if at_most else "≥"
                lines.append(
                    f"| {name} | {sign} {goal:g} | {value:.2f} | {'yes' if met else '**no**'} |"
                )
        lines.append("")
    return "\n".join(lines)


def _targets(
    at: dict[tuple[str, int, str, str], Figure],
    database: str,
    keys: int,
    rss: dict[str, dict[str, float]],
) -> list[tuple[str, float | None, float, bool]]:
    """(target, measured, goal, whether the goal is a maximum rather than a minimum)."""

    def rps(operation: str, contender: str, size: int = keys) -> float | None:
        figure = at.get((database, size, operation, contender))
        return figure.rps if figure else None

    ours = rps(VERIFY, KEYPLANE)
    peers = [r for r in (rps(VERIFY, p) for p in PEERS) if r]
    floor = rps(VERIFY, FLOOR)
    patch, patch_peer = rps(PATCH, KEYPLANE), rps(PATCH, PEERS[0])
    writing, writing_peer = rps(PATCH_WRITING, KEYPLANE), rps(PATCH_WRITING, PEERS[0])
    verify = at.get((database, keys, VERIFY, KEYPLANE))
    # Measured in the same run when there is one (bench.run adds it to large runs).
    small = rps(VERIFY, KEYPLANE_SMALL) or rps(VERIFY, KEYPLANE, SMALL)
    memory = rss.get(f"{database}, {keys:,} keys", {})

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    plain_spread = rps(VERIFY_SPREAD, KEYPLANE)
    return [
        ("verify ÷ the faster peer", ours / max(peers) if ours and peers else None, 1.3, False),
        ("verify ÷ AsyncApp no-op", ours / floor if ours and floor else None, 0.6, False),
        (
            "verify at this size ÷ at 10,000 keys",
            ours / small if ours and small and keys != SMALL else None,
            0.9,
            False,
        ),
        (
            "verify p99 ÷ p50",
            verify.p99_ms / verify.p50_ms if verify and verify.p50_ms else None,
            4,
            True,
        ),
        (
            "PATCH (the same body) ÷ the FastAPI peer's",
            patch / patch_peer if patch and patch_peer else None,
            1,
            False,
        ),
        (
            "PATCH (a change each time) ÷ the FastAPI peer's",
            writing / writing_peer if writing and writing_peer else None,
            1,
            False,
        ),
        (
            "list keys (20) ÷ the FastAPI peer's",
            ratio(rps(LIST, KEYPLANE), rps(LIST, PEERS[0])),
            1,
            False,
        ),
        # What Keyplane's own code costs beside the one lookup no verify can skip.
        (f"verify ÷ {FLOOR_QUERY}", ratio(ours, rps(VERIFY, FLOOR_QUERY)), 0.85, False),
        ("verify, limited ÷ plain (one hot key)", ratio(rps(LIMITED, KEYPLANE), ours), 0.6, False),
        (
            "verify, limited ÷ plain (1,000 keys)",
            ratio(rps(LIMITED_SPREAD, KEYPLANE), plain_spread),
            0.8,
            False,
        ),
        (
            "verify, limited with Redis ÷ plain (one hot key)",
            ratio(rps(LIMITED, KEYPLANE_REDIS), ours),
            0.8,
            False,
        ),
        (
            "verify, limited with Redis ÷ plain (1,000 keys)",
            ratio(rps(LIMITED_SPREAD, KEYPLANE_REDIS), plain_spread),
            0.8,
            False,
        ),
        (
            "verify with a verifier key ÷ open verify",
            ratio(ours, rps(VERIFY, KEYPLANE_OPEN)),
            0.9,
            False,
        ),
        (
            "verify, plain ÷ at the baseline revision",
            ratio(ours, rps(VERIFY, BASELINE)),
            0.97,
            False,
        ),
        (
            "Keyplane's peak RSS per worker, MB",
            memory.get(KEYPLANE),
            RSS_LIMIT_MB,
            True,
        ),
    ]


def _chart(figures: list[Figure], path: Path) -> None:
    groups = sorted({(f.database, f.keys) for f in figures})
    contenders = [KEYPLANE, *PEERS, FLOOR, FLOOR_QUERY]
    at = _index(figures)
    fig, axis = plt.subplots(figsize=(2.2 + 2.4 * len(groups), 4.5))
    width = 0.8 / len(contenders)
    for n, contender in enumerate(contenders):
        values = [
            at[(d, k, VERIFY, contender)].rps if (d, k, VERIFY, contender) in at else 0
            for d, k in groups
        ]
        bars = axis.bar([g + n * width for g in range(len(groups))], values, width, label=contender)
        axis.bar_label(bars, fmt="%.0f", fontsize=7)
    axis.set_xticks([g + width * (len(contenders) - 1) / 2 for g in range(len(groups))])
    axis.set_xticklabels([f"{d}\n{k:,} keys" for d, k in groups])
    axis.set_ylabel("verify, req/s (2 workers, wrk -c32)")
    axis.set_title("Verifying a valid key")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
