"""A real install (a wheel in a fresh virtual environment, far from the checkout) serves, and
puts only ``keyplane`` on the import path: the layers ``db`` and ``handlers`` travel inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.servers import free_port, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("keyplane-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package_and_the_licence(wheel, db_kind):
    if db_kind != "sqlite":
        pytest.skip("packaging does not depend on the database; it runs in the SQLite half")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    (dist_info,) = tops - {"keyplane"}
    assert dist_info.endswith(".dist-info")
    assert "keyplane/db/migrations/env.py" in names
    assert "keyplane/handlers/api_keys.py" in names
    assert "keyplane/openapi/swagger.yaml" in names
    licence = zipfile.ZipFile(wheel).read(f"{dist_info}/licenses/LICENSE").decode()
    assert licence == (REPOSITORY / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_a_wheel_in_a_fresh_environment_serves_and_names_nothing_generic(wheel, tmp_path, db_kind):
    if db_kind != "sqlite":
        pytest.skip("packaging does not depend on the database; it runs in the SQLite half")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python, keyplane = environment / "bin" / "python", environment / "bin" / "keyplane"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
        check=True,
        timeout=600,
    )
    # Far from the checkout: nothing of the repository is on the path.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYPLANE_", "PYTHON"))} | {
        "KEYPLANE_DATABASE_URL": f"sqlite:///{elsewhere / 'keyplane.db'}",
        "KEYPLANE_SECRET_KEY": TEST_SECRET,
    }

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    for generic in ("db", "handlers", "openapi"):
        imported = run(python, "-c", f"import {generic}")
        assert imported.returncode == 1
        assert f"No module named '{generic}'" in imported.stderr
    version = run(keyplane, "--version")
    assert (version.returncode, version.stdout) == (0, "keyplane 0.1.0\n")
    where = run(python, "-c", "import keyplane.app as a; print(a.SPEC_PATH)")
    assert Path(where.stdout.strip()).parts[-3:] == ("keyplane", "openapi", "swagger.yaml")
    assert str(environment) in where.stdout

    port = free_port()
    server = subprocess.Popen(
        [keyplane, "serve", "--port", str(port)],
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
        ui = httpx.get(f"http://127.0.0.1:{port}/ui/")
        assert ui.status_code == 200
        assert "swagger-ui" in ui.text
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "Warning" not in stderr, stderr
