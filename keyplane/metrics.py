"""Prometheus metrics, correct with several worker processes.

``keyplane serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the
workers start, so every process writes its samples there and any of them (or the
separate metrics port) answers for all (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("keyplane_requests_total", "Requests answered", ["operation", "status"])
LATENCY = Histogram(
    "keyplane_request_duration_seconds",
    "Time to answer a request",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
VERIFICATIONS = Counter("keyplane_verifications_total", "Verify outcomes", ["code"])
POOL_IN_USE = Gauge(
    "keyplane_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        return collected
    return REGISTRY


# The classic text format generate_latest() writes (the spec names this media type;
# Flask adds "; charset=utf-8").
CONTENT_TYPE = "text/plain; version=0.0.4"


def exposition() -> tuple[bytes, str]:
    return generate_latest(registry()), CONTENT_TYPE
