"""``/metrics``: Prometheus text format, when exposed on the API's port."""

from __future__ import annotations

from keyplane import metrics, runtime
from keyplane.errors import NotFound


def get() -> tuple[bytes, int, dict[str, str]]:
    if runtime.current().settings.metrics != "on":
        raise NotFound("Metrics are not served here")
    body, content_type = metrics.exposition()
    return body, 200, {"Content-Type": content_type}
