"""Every code block a reader runs is run here, against a live Keyplane, as written.

The blocks are the README's, CONTRIBUTING.md's and docs/'s ``sh`` and ``python`` blocks
(``tests/docblocks.py``). Each runs in a shell (``bash -euo pipefail``) or Python with
what the README's Quickstart leaves a reader with: ``PORT``, ``TOKEN``, ``ACCOUNT``,
``KEY`` (a key holding ``readApplications``), ``VERIFIER`` (a key holding
``keyplane.verify``) and the server's own ``KEYPLANE_*``
settings, and must succeed. The few blocks this cannot run (they serve, or take
minutes) name the test that runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docblocks import DOCUMENTS, REPOSITORY, RUN_ELSEWHERE, RUNNABLE, Block, blocks
from tests.live import Live, live_server

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

METRICS_TOKEN = "docs-metrics-token-of-some-length"
LEAK_REPORT_TOKEN = "docs-leak-report-token-of-some-length"
EVERY_BLOCK = [b for document in DOCUMENTS for b in blocks(document)]
RUN_HERE = [b for b in EVERY_BLOCK if b.language in RUNNABLE and b.key not in RUN_ELSEWHERE]


@pytest.fixture(scope="module")
def live(module_database_url):
    with live_server(
        module_database_url,
        KEYPLANE_METRICS_TOKEN=METRICS_TOKEN,
        # docs/webhooks.md's receiver runs on the reader's machine; docs/leaks.md reports
        # as the operator's scanner.
        KEYPLANE_WEBHOOKS_ALLOW_PRIVATE="true",
        KEYPLANE_LEAK_REPORT_TOKEN=LEAK_REPORT_TOKEN,
    ) as live:
        yield live


@pytest.fixture(scope="module")
def reader(live: Live) -> dict[str, str]:
    """The environment a reader has after the Quickstart."""
    key = live.create_key(
        description="Billing service, production",
        permissions=["readApplications"],
        external_id="cus_4f2a",
    )
    return {
        **live.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": live.base.rsplit(":", 1)[1],
        "TOKEN": live.token,
        "ACCOUNT": str(live.account_id),
        "KEY": key["full_key"],
        "VERIFIER": live.verifier_key,
    }


def test_every_block_says_its_language_and_every_runnable_one_is_run():
    unmarked = [b.where for b in EVERY_BLOCK if not b.language]
    assert not unmarked, f"fence these with their language: {unmarked}"
    for key, test in RUN_ELSEWHERE.items():
        assert any(b.key == key and b.language in RUNNABLE for b in EVERY_BLOCK), key
        assert (REPOSITORY / test).exists(), test
    assert len(RUN_HERE) >= 8


@pytest.mark.parametrize("block", RUN_HERE, ids=lambda b: f"{b.where} ({b.language})")
def test_the_block_runs_as_written(block: Block, reader: dict[str, str], db_kind: str):
    if block.key == ("CONTRIBUTING.md", "Tests") and db_kind != "sqlite":
        pytest.skip("the quick subset runs the suite once, in the SQLite half")
    if block.language == "sh":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        command = [sys.executable, "-c", block.code + _EXERCISE]
    done = subprocess.run(
        command, cwd=REPOSITORY, env=reader, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    _answers_are_not_errors(block, done.stdout)


def _answers_are_not_errors(block: Block, output: str) -> None:
    """What curl printed holds no error answer (curl itself succeeds on a 4xx)."""
    if "curl" not in block.code:
        return
    for line in output.splitlines():
        for answer in _json_objects(line):
            assert "detail" not in answer and "error" not in answer, f"{block.where}: {line}"


def _json_objects(line: str) -> list[dict[str, Any]]:
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := line.find("{", position)) != -1:
        try:
            value, position = decoder.raw_decode(line, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


# A block that defines WSGI middleware is also worn by an app, and called as a client
# of that app would call it: the key the reader holds passes, a made-up one does not.
_EXERCISE = """

if "require_key" in globals():
    def _app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["keyplane.customer"].encode()]

    def _call(key):
        seen = {}
        body = require_key(_app, ["readApplications"])(
            {"HTTP_X_API_KEY": key}, lambda status, headers: seen.update(status=status)
        )
        return seen["status"], b"".join(body)

    assert _call(os.environ["KEY"]) == ("200 OK", b"cus_4f2a"), _call(os.environ["KEY"])
    assert _call("kp_made-up")[0] == "401 Unauthorized"
"""
