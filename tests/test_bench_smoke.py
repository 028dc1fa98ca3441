"""The benchmark's smoke run, never its timing: every contender, started as the
benchmark starts it (its own server, 2 workers, its own data), answers every
operation it is measured on correctly, on this run's database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

REPOSITORY = Path(__file__).resolve().parent.parent


def _bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<module>``, as the repository runs it; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_every_contender_answers_every_operation_correctly(db_kind):
    result = _bench("run", "--smoke", "--databases", db_kind, "--postgres", POSTGRES_ADMIN_URL)
    assert "every contender answered every operation correctly" in result.stdout


def test_the_usage_chart_is_drawn_from_what_get_usage_answers(tmp_path, db_kind):
    """``python -m bench.usage_chart``: the docs' chart, from a served Keyplane's counts."""
    if db_kind != "sqlite":
        pytest.skip("the chart's Keyplane serves SQLite, whichever half runs")
    result = _bench("usage_chart", "--out", str(tmp_path))
    totals = json.loads(result.stdout.splitlines()[-1])
    assert totals == {
        "VALID": 230,
        "INSUFFICIENT_PERMISSIONS": 20,
        "USAGE_EXCEEDED": 30,
        "REVOKED": 15,
    }
    report = json.loads((tmp_path / "usage.json").read_text())
    assert report["group_by"] == ["external_id", "code"]
    assert (tmp_path / "usage.png").read_bytes().startswith(b"\x89PNG")
