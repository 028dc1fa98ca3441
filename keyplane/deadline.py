"""Failure is answered, not hung: a request whose work outlives its budget gets a 503.

The clock runs while the server works on a request and stops while it waits for the
client's body (slow clients have their own limit), so the budget measures what the
server owes. When it runs out, the client gets ``503`` with ``Retry-After`` in its
surface's shape at once, whatever the request was waiting for (a pooled connection,
a lock, a database that stopped answering, a worker thread).

Such a request must never commit afterwards: the handler's thread claims the commit
(``Budget.claim_commit``) and a request that ran out of time cannot claim it, so its
transaction is rolled back. A commit already under way when the budget runs out is
given a moment to finish, then the client is told 503 all the same: that is the one
case where a 503 does not prove that nothing changed, and the database's own
idle-in-transaction timeout ends such a transaction if its client is gone.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER_SECONDS = 2
MESSAGE = "The service could not answer in time; try again shortly"
_COMMIT_GRACE_SECONDS = 1.0


class Budget:
    """One request's time, shared by the event loop and the thread running its handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "working"  # then "committing" (the thread) or "expired" (the loop)

    def claim_commit(self) -> bool:
        """False if the budget has already run out."""
        return self._move("committing", unless="expired")

    def expire(self) -> bool:
        """False if a commit is already under way."""
        return self._move("expired", unless="committing")

    def _move(self, state: str, *, unless: str) -> bool:
        with self._lock:
            if self._state == unless:
                return False
            self._state = state
            return True


_budget: ContextVar[Budget | None] = ContextVar("keyplane_budget", default=None)
# Work given up on is cancelled, and kept referenced until it has unwound.
_abandoned: set[asyncio.Future[None]] = set()


def claim_commit() -> bool:
    """May this request still commit? (Always, outside a request with a budget.)"""
    budget = _budget.get()
    return budget is None or budget.claim_commit()


class Deadline:
    def __init__(
        self,
        app: ASGIApp,
        *,
        seconds: float,
        timed_out: Callable[[str], tuple[bytes, list[tuple[bytes, bytes]]]],
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.timed_out = timed_out  # path -> the 503's body and headers, in its surface's shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        clock = {"since": loop.time(), "receiving": False, "started": False}

        async def receive_timed() -> Message:
            clock["receiving"] = True
            try:
                return await receive()
            finally:
                clock["receiving"], clock["since"] = False, loop.time()

        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                clock["started"] = True
            await send(message)

        budget = Budget()
        token = _budget.set(budget)
        try:
            work = asyncio.ensure_future(self.app(scope, receive_timed, send_noted))
        finally:
            _budget.reset(token)
        while not work.done():
            remaining = float(clock["since"]) + self.seconds - loop.time()
            await asyncio.wait({work}, timeout=max(remaining, 0.05))
            if work.done() or clock["receiving"] or clock["started"]:
                continue  # a slow client, or an answer already on its way
            if float(clock["since"]) + self.seconds > loop.time():
                continue
            if not budget.expire():
                await asyncio.wait({work}, timeout=_COMMIT_GRACE_SECONDS)
                if work.done():
                    break
            work.cancel()
            _abandoned.add(work)
            work.add_done_callback(_abandoned.discard)
            body, headers = self.timed_out(scope["path"])
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        work.result()
