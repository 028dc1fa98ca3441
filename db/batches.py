"""Work that arrives while a batch runs waits for the next batch, and goes in with the
rest that waited: group commit, as databases do it for their own log.

A verify of a limited key must commit its spend before it answers, and on one hot key
every transaction waits for the one before it (the row's lock; on SQLite, the write
lock and a sync to disk). Alone, each spend pays all of that; in a batch, the spends
that queued meanwhile share one BEGIN, one COMMIT and one wait for the lock, while each
is still judged on its own, in the order it arrived (``db.limits.spend_together``).
Nothing is answered before its batch has run; if the batch fails, every caller in it
is told the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from anyio import CapacityLimiter, to_thread

T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """``await batches(item)``: ``run`` gets ``item`` among every item that queued
    while the batch before it ran (at most ``most``), in a worker thread under
    ``limiter``, one batch at a time per event loop; its answer for ``item`` comes back."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        limiter: CapacityLimiter,
        most: int = 256,
    ) -> None:
        self.run = run
        self.limiter = limiter
        self.most = most
        # A queue per event loop: a future belongs to the loop that made it.
        self._queues: WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue[T, R]] = (
            WeakKeyDictionary()
        )

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        answer: asyncio.Future[R] = loop.create_future()
        queue.waiting.append((item, answer))
        if queue.runner is None:
            queue.runner = loop.create_task(self._drain(queue))
        return await answer

    async def _drain(self, queue: _Queue[T, R]) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while queue.waiting:
                batch, queue.waiting = queue.waiting[: self.most], queue.waiting[self.most :]
                try:
                    results = await to_thread.run_sync(
                        self.run, [item for item, _ in batch], limiter=self.limiter
                    )
                except Exception as error:  # every caller in the batch is told
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():  # a caller that gave up is not answered
                        answer.set_result(result)
        finally:
            queue.runner = None
            for _, answer in batch + queue.waiting:  # the loop is closing: none is left waiting
                answer.cancel()
            queue.waiting = []


class _Queue(Generic[T, R]):
    def __init__(self) -> None:
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self.runner: asyncio.Task[None] | None = None
