"""``/metrics``: Prometheus text format, when exposed on the API's port.

``keyplane serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the
workers start, so every process writes its samples there and any of them (or the
separate metrics port) answers for all (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from keyplane.db.errors import NotFound
from keyplane.handlers.context import runtime

# The classic text format generate_latest() writes (the spec names this media type).
CONTENT_TYPE = "text/plain; version=0.0.4"


def get() -> tuple[bytes, int, dict[str, str]]:
    if not runtime().metrics_here:
        raise NotFound("Metrics are not served here")
    return generate_latest(registry()), 200, {"Content-Type": CONTENT_TYPE}


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        return collected
    return REGISTRY
