"""A real install (a wheel, not the checkout) serves: the spec and migrations are in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.servers import free_port, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

REPOSITORY = Path(__file__).resolve().parent.parent


def test_an_installed_wheel_serves_the_api(tmp_path, db_kind):
    if db_kind != "sqlite":
        pytest.skip("packaging does not depend on the database; it runs in the SQLite half")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("keyplane-*.whl")
    installed = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "-t",
            str(installed),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # The installed copy first on the path, and far from the checkout: no openapi/ beside it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")} | {
        "PYTHONPATH": str(installed),
        "KEYPLANE_DATABASE_URL": f"sqlite:///{elsewhere / 'keyplane.db'}",
        "KEYPLANE_SECRET_KEY": TEST_SECRET,
    }
    where = subprocess.run(
        [sys.executable, "-c", "import keyplane.app as a; print(a.SPEC_PATH)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()) == installed / "keyplane" / "openapi" / "swagger.yaml"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "keyplane.cli", "serve", "--port", str(port)],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        spec = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/v1/keys/verify" in spec["paths"]
    finally:
        server.terminate()
        server.communicate(timeout=30)
