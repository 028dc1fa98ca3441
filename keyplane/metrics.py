"""Request metrics, correct with several worker processes (see ``handlers.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("keyplane_requests_total", "Requests answered", ["operation", "status"])
LATENCY = Histogram(
    "keyplane_request_duration_seconds",
    "Time to answer a request",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POOL_IN_USE = Gauge(
    "keyplane_db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
