"""Real ``keyplane serve`` processes on loopback, for tests that need them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

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


@contextmanager
def pgbouncer(database_url: str, pool_mode: str = "transaction") -> Iterator[str]:
    """Debian's PgBouncer on a free loopback port in front of ``database_url``'s server;
    yields the same database's URL through it."""
    program = debian_program("pgbouncer", "pgbouncer")
    url = make_url(database_url)
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="keyplane-pgbouncer-"))
    (folder / "users.txt").write_text(f'"{url.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={url.host} port={url.port or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = {pool_mode}
max_client_conn = 1000
default_pool_size = 20
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""
    )
    # PgBouncer refuses to run as root: it drops to PostgreSQL's own user then.
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    bouncer = subprocess.Popen(
        [program, *as_user, str(folder / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, bouncer)
        yield url.set(port=port).render_as_string(hide_password=False)
    finally:
        bouncer.terminate()
        bouncer.communicate(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"it stopped at once: {process.communicate()[1]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def debian_program(name: str, package: str) -> str:
    """The path of a program from Debian's ``package``: the test is skipped without it,
    except in CI (``.ci/run`` installs it)."""
    import pytest

    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"CI needs Debian's {package}", pytrace=False)
    pytest.skip(f"SKIPPED: apt-get install {package} to run it")
