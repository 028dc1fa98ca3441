"""Production serving: SIGTERM lets a request in flight finish before the process exits."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from tests.conftest import TEST_SECRET
from tests.servers import keyplane_env, serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser


def test_sigterm_during_a_slow_request_lets_it_finish(fresh_database_url):
    body = json.dumps({"key": "kp_not_a_real_key", "permissions": []}).encode()
    head = (
        "POST /v1/keys/verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    # Verify open (no credential to make first): what is timed is the shutdown.
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_VERIFY_OPEN="1"
    )
    with serving(env) as (base, server):
        wait_until_up(base)
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            # The request starts, its body half sent: a slow client, in flight.
            slow.sendall(head + body[:10])
            time.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.poll() is None, "the server quit with a request in flight"
            slow.sendall(body[10:])
            chunks = []
            while chunk := slow.recv(65536):  # the server closes it once answered
                chunks.append(chunk)
            answer = b"".join(chunks).decode()
        assert answer.startswith("HTTP/1.1 200")
        assert '"code": "NOT_FOUND"' in answer or '"code":"NOT_FOUND"' in answer
        # uvicorn re-raises SIGTERM once it has shut down gracefully.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
