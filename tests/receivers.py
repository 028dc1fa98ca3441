"""Real HTTP endpoints on loopback that webhook tests send to: each records what came
and answers as its script says (a status per request, or no answer at all)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> Any:
        """The message as the reference library reads it: raises unless signed by ``secret``."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    """``statuses``: the answers to the first requests, in order; then ``then``. A
    status of 0 is no answer: the connection is held until the receiver closes."""

    statuses: list[int] = field(default_factory=list)
    then: int = 204
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)

    def answer(self, message: Received) -> int:
        with self._lock:
            self.received.append(message)
            return self.statuses.pop(0) if self.statuses else self.then

    def wait_for(self, count: int, seconds: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} of {count} messages came in {seconds} s")

    def bodies(self, secret: str) -> list[Any]:
        return [message.verified(secret) for message in self.received]


@contextmanager
def receiving(
    *statuses: int, then: int = 204, path: str = "/hook", gate: threading.Event | None = None
) -> Iterator[Receiver]:
    """``gate``: each request, once recorded, is answered only when it is set."""
    receiver = Receiver(list(statuses), then)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            message = Received(
                {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
            )
            status = receiver.answer(message)
            if gate is not None:
                gate.wait(30)
            if status == 0:
                receiver._closing.wait(30)
                return
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver._closing.set()
        server.shutdown()
        server.server_close()
