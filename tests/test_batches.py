"""``db.batches``: what queues while a batch runs goes in the next one, each caller is
answered with its own result, and a failed batch tells every caller in it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from anyio import CapacityLimiter

from keyplane.db.batches import Batches


class Recorder:
    """Runs each batch slowly enough for more callers to queue, and records it."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        threading.Event().wait(0.05)
        if self.fail_on in items:
            raise RuntimeError("the database went away")
        return [item * 10 for item in items]


def test_callers_that_queue_meanwhile_share_the_next_batch_in_order():
    recorder = Recorder()

    async def main() -> list[int]:
        batches = Batches(recorder, CapacityLimiter(1))
        first = asyncio.create_task(batches(0))
        await asyncio.sleep(0.01)  # the first batch is running: these queue behind it
        return [await first, *await asyncio.gather(*(batches(i) for i in range(1, 21)))]

    assert asyncio.run(main()) == [i * 10 for i in range(21)]
    assert recorder.batches == [[0], list(range(1, 21))]
    assert threading.main_thread().name not in recorder.threads  # off the event loop


def test_a_batch_of_at_most_most_items():
    recorder = Recorder()

    async def main() -> list[int]:
        batches = Batches(recorder, CapacityLimiter(1), most=8)
        return await asyncio.gather(*(batches(i) for i in range(20)))

    assert asyncio.run(main()) == [i * 10 for i in range(20)]
    assert [len(batch) for batch in recorder.batches] == [8, 8, 4]


def test_a_failed_batch_tells_each_of_its_callers_and_the_next_batch_runs():
    recorder = Recorder(fail_on=3)

    async def main() -> list[int | str]:
        batches = Batches(recorder, CapacityLimiter(1), most=5)

        async def one(item: int) -> int | str:
            try:
                return await batches(item)
            except RuntimeError as error:
                return str(error)

        return await asyncio.gather(*(one(i) for i in range(8)))

    answers = asyncio.run(main())
    assert answers[:5] == ["the database went away"] * 5
    assert answers[5:] == [50, 60, 70]


def test_a_caller_that_gives_up_leaves_the_others_answered():
    recorder = Recorder()

    async def main() -> list[int]:
        batches = Batches(recorder, CapacityLimiter(1))
        first = asyncio.create_task(batches(0))
        await asyncio.sleep(0.01)
        quitter = asyncio.create_task(batches(1))
        rest = [asyncio.create_task(batches(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        return [await first, *[await task for task in rest]]

    assert asyncio.run(main()) == [0, 20, 30]
