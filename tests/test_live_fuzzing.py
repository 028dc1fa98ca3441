"""``schemathesis run`` against the service as the README serves it (a real socket,
2 workers), every check and every phase, with a fixed seed and a bounded number of
examples. The stateful phase walks the spec's links through real resources.

A deeper run: ``KEYPLANE_FUZZ_EXAMPLES=1000 KEYPLANE_FUZZ_SEED=<any> make test``, or
``schemathesis run`` by hand as the README shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import live_server

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

REPOSITORY = Path(__file__).resolve().parent.parent
EXAMPLES = os.environ.get("KEYPLANE_FUZZ_EXAMPLES", "30")
SEED = os.environ.get("KEYPLANE_FUZZ_SEED", "20261130")
METRICS_TOKEN = "fuzzed-metrics-token-0123456789"
MIN_LINKS = 30


def _user_id(live) -> int:
    with live.client() as client:
        return int(client.get("/v1/users/me", headers=live.auth).json()["id"])


def test_schemathesis_finds_no_failure_against_a_live_server(module_database_url):
    with live_server(module_database_url, KEYPLANE_METRICS_TOKEN=METRICS_TOKEN) as live:
        schemathesis = Path(sys.executable).parent / "schemathesis"
        result = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{live.base}/openapi.json",
                "--header", f"Authorization: Bearer {live.token}",
                "--checks", "all",
                "--phases", "examples,coverage,fuzzing,stateful",
                "--seed", SEED,
                "--max-examples", EXAMPLES,
                "--workers", "1",
                "--no-color",
            ],
            cwd=REPOSITORY,  # schemathesis.toml, and tests.fuzzing for its hooks
            env=os.environ | {
                "PYTHONPATH": str(REPOSITORY),
                "KEYPLANE_FUZZ_METRICS_TOKEN": METRICS_TOKEN,
                "KEYPLANE_FUZZ_USER_ID": str(_user_id(live)),
            },
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-8000:]
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", report)
    assert links is not None, report[-3000:]
    assert int(links[1]) >= MIN_LINKS, report[-8000:]
    print(f"schemathesis against a live server: {links[0]}")  # shown by pytest -rP
