"""One structured JSON line and metrics per request, ``X-Request-ID`` on every response.

The line holds the route template (never the raw path, which may carry ids), the
status, the duration, the account, the kind of principal and the client's address (the
peer, or the client a trusted proxy names: ``KEYPLANE_TRUSTED_PROXIES``). It never
holds a header value, a body or a query string, so no secret can reach it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane import db, metrics
from keyplane.handlers import context

logger = logging.getLogger("keyplane.requests")
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestLog:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, str],
        pool_in_use: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes  # resolved operation -> "operationId METHOD /path/{template}"
        self.pool_in_use = pool_in_use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _ACCEPTABLE_ID.match(given) else uuid.uuid4().hex
        facts, token = context.start_facts()
        client = scope.get("client")
        address = client[0] if client else None
        address_token = db.audit.CLIENT_ADDRESS.set(address)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.end_facts(token)
            db.audit.CLIENT_ADDRESS.reset(address_token)
            duration = time.perf_counter() - started
            operation, _, route = self.routes.get(facts.operation_id or "", "").partition(" ")
            metrics.REQUESTS.labels(operation or "unmatched", str(status)).inc()
            metrics.LATENCY.labels(operation or "unmatched").observe(duration)
            if self.pool_in_use is not None:
                metrics.POOL_IN_USE.set(self.pool_in_use())
            logger.info(
                json.dumps(
                    {
                        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": route.split(" ", 1)[1] if route else None,
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "account_id": facts.account_id,
                        "principal": facts.principal,
                        "client": address,
                    }
                )
            )
