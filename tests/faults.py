"""Faults a test controls: a TCP proxy that can be cut, and a disk that can fill up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.servers import free_port


class Proxy:
    """Relays 127.0.0.1:``port`` to ``target_port``; ``cut()`` stops relaying.

    A cut is a partition, not a refusal: connections stay open and new ones are
    accepted, but nothing crosses. What was sent during the cut is held and delivered
    when the proxy is ``restore()``d, as a network that heals delivers it late.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        # Whatever is still pending (relays held by a cut) ends with the loop.
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(self._pipe(client_in, server_out), self._pipe(server_in, client_out))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        sink.close()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a server's workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


@contextlib.contextmanager
def disk_full(pids: list[int], allowed_bytes: int) -> Iterator[None]:
    """No process of ``pids`` can grow a file past ``allowed_bytes`` (as on a full disk)."""
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    for pid in pids:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (allowed_bytes, resource.RLIM_INFINITY))
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)


def largest_file(*paths: Path) -> int:
    return max((os.path.getsize(p) for p in paths if p.exists()), default=0)
