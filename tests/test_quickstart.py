"""The README's Quickstart, line for line, in a fresh copy of the repository.

The lines are taken from the README's ``sh`` block under "## Quickstart" and run by
bash as they are, with one change: ``PORT`` (8000 there) is set to a port where another
server already answers everything, as one someone left running would: the lines must
find a free port of their own and never talk to it. ``make serve`` builds its own
``.venv`` (what serving needs, from PyPI), so this also measures a newcomer's time
from a clone to a first ``VALID`` verify (printed; ``pytest -rP`` shows it).

Once per run, on SQLite (the Quickstart's database): the PostgreSQL half skips it.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.docblocks import block

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

REPOSITORY = Path(__file__).resolve().parent.parent


def quickstart_lines() -> str:
    return block("README.md", "Quickstart")


def _copy_of_the_repository(target: Path) -> None:
    """What a clone holds: every file git tracks (or would), as it is in the tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPOSITORY / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_the_quickstart_verifies_a_key_valid(tmp_path, db_kind):
    if db_kind != "sqlite":
        pytest.skip("the Quickstart serves SQLite; it runs once, in the SQLite half")
    lines = quickstart_lines()
    assert lines.startswith("PORT=8000\n") and "make serve PORT=$PORT" in lines
    decoy = _Decoy()  # something else on the Quickstart's port, answering everything 200
    script = lines.replace("PORT=8000\n", f"PORT={decoy.port}\n", 1)
    checkout = tmp_path / "keyplane"
    started = time.monotonic()
    _copy_of_the_repository(checkout)
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KEYPLANE_", "PROMETHEUS_", "VIRTUAL_ENV", "PYTHON"))
    }
    shell = subprocess.Popen(
        ["bash", "-c", script],  # noqa: S607
        cwd=checkout,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the served make and its workers: one group to stop
    )
    try:
        stdout, stderr = shell.communicate(timeout=600)
        elapsed = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server the lines left running
            os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(timeout=30)
        decoy.stop()
    served = (checkout / "serve.log").read_text() if (checkout / "serve.log").exists() else ""
    assert shell.returncode == 0, stderr + served[-3000:]
    answer = json.loads(stdout)  # the verify's answer is all the lines print
    assert (answer["valid"], answer["code"]) == (True, "VALID"), stdout
    assert answer["external_id"] == "cus_4f2a"
    assert answer["permissions"] == ["readApplications"]
    assert decoy.asked == 0, "the Quickstart talked to the server already on its port"
    assert f"Keyplane will serve on http://127.0.0.1:{decoy.port}" not in stderr
    print(f"Quickstart: from a copy of the repository to a VALID verify in {elapsed:.0f} s")


class _Decoy(http.server.ThreadingHTTPServer):
    """Another program's server on the port a reader chose: it answers ``/healthz`` (and
    everything else) 200, as a server someone left running might."""

    def __init__(self) -> None:
        self.asked = 0
        decoy = self

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                decoy.asked += 1
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}')

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Answer)
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def test_make_serve_passes_host_and_port_to_keyplane_serve():
    """``make serve HOST=... PORT=...``: the command make would run (the Quickstart
    above starts a real one with PORT), and no test or development tools for it."""
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", "HOST=0.0.0.0", "PORT=9123"],  # noqa: S607
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert ".venv/bin/keyplane serve --host 0.0.0.0 --port 9123" in planned
    assert not any("[test" in line for line in planned)  # serving's dependencies only
