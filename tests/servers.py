"""Real ``keyplane serve`` processes on loopback, for tests that need them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

KEYPLANE = [sys.executable, "-m", "keyplane.cli"]


def keyplane_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    return env | {"KEYPLANE_DATABASE_URL": database_url} | extra


def create_account(env: dict[str, str], name: str = "acme", admin: str = "alice") -> None:
    """What an operator runs for a new account: the schema first (only ``db upgrade`` and
    ``serve`` create a database), then the account and its first admin."""
    for argv in (["db", "upgrade"], ["create-account", name, "--admin", admin]):
        subprocess.run([*KEYPLANE, *argv], env=env, capture_output=True, timeout=60, check=True)


@contextmanager
def serving(env: dict[str, str], workers: int = 1) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A server on a free port; yields its base URL and process, stops it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [*KEYPLANE, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        server.communicate(timeout=30)


def wait_until_up(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/openapi.json").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"no server came up at {base}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
