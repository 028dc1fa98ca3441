"""uvicorn's HTTP/1.1 protocol, with a limit on how long a client may take to send headers.

A client that opens a connection, or begins a request, and then trickles its headers
(slowloris) would hold the connection forever: uvicorn bounds idle keep-alive
connections, not this. Here complete headers must arrive within
``KEYPLANE_HEADER_TIMEOUT_SECONDS`` (10) of the connection's opening or the request's
first byte; otherwise the answer is 408 and the connection is closed. (The body has
its own limit in ``keyplane.guards``.)
"""

from __future__ import annotations

import asyncio
import functools
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keyplane.settings import Settings

_TOO_SLOW = json.dumps({"detail": "The request headers did not arrive in time"}).encode()


@functools.cache
def _header_timeout() -> float:
    return Settings.from_env(with_secret=False).header_timeout_seconds


class HttpProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(_header_timeout(), self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(_TOO_SLOW)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _TOO_SLOW
        )
        self.transport.close()
