"""The spec serves a real code generator: openapi-python-client builds a client from
``openapi/swagger.yaml``, and that client drives the key lifecycle on both surfaces
against a live server."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType

import pytest

from keyplane.app import SPEC_PATH
from tests.conftest import TEST_SECRET
from tests.docblocks import block
from tests.servers import create_account, keyplane_env, serving, wait_until_up

pytestmark = pytest.mark.slow  # a live server, a subprocess or a browser

PASSWORD = "generated-client-password"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("generated")
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert generator, "openapi-python-client is a test dependency"
    result = subprocess.run(
        [generator, "generate", "--path", str(SPEC_PATH), "--meta", "none",
         "--output-path", str(root / "keyplane_client")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (root / "keyplane_client" / "client.py").exists(), result.stdout + result.stderr
    sys.path.insert(0, str(root))
    yield "keyplane_client"
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith("keyplane_client")]:
        del sys.modules[name]


def _load(package: str, name: str) -> ModuleType:
    return importlib.import_module(f"{package}.{name}")


def test_the_generated_client_drives_the_lifecycle_on_both_surfaces(
    client_package, fresh_database_url
):
    pkg = client_package
    client_mod, models = _load(pkg, "client"), _load(pkg, "models")
    token_api = _load(pkg, "api.auth.auth_token")
    create_api, get_api = (
        _load(pkg, "api.api_keys.api_keys_create"),
        _load(pkg, "api.api_keys.api_keys_get"),
    )
    update_api = _load(pkg, "api.api_keys.api_keys_update")
    rotate_api, revoke_api = (
        _load(pkg, "api.api_keys.api_keys_rotate"),
        _load(pkg, "api.api_keys.api_keys_revoke"),
    )
    verify_api = _load(pkg, "api.verify.keys_verify")
    console_create = _load(pkg, "api.console.console_keys_create")
    console_update = _load(pkg, "api.console.console_keys_update")
    console_get = _load(pkg, "api.console.console_keys_get")
    console_revoke = _load(pkg, "api.console.console_keys_revoke")

    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    create_account(env)
    with serving(env) as (base, _), ExitStack() as clients:
        wait_until_up(base)
        # Entered, so that their connections are closed when the test ends.
        anonymous = clients.enter_context(client_mod.Client(base_url=base))
        token = token_api.sync(
            client=anonymous,
            body=models.TokenRequest(grant_type="password", username="alice", password=PASSWORD),
        )
        assert isinstance(token, models.Token)
        api = clients.enter_context(
            client_mod.AuthenticatedClient(base_url=base, token=token.access_token)
        )

        def verify(full_key: str) -> str:
            verdict = verify_api.sync(
                client=api, body=models.VerifyRequest(key=full_key)
            )  # an admin
            return str(verdict.code)

        # v1: create, the v1 contract's PATCH, get, rotate, revoke.
        created = create_api.sync(
            client=api,
            body=models.APIKeyRecordCreate(
                description="from the client", permissions=["readApplications"]
            ),
        )
        assert verify(created.full_key) == "VALID"
        patched = update_api.sync(
            created.id, client=api, body=models.APIKeyRecordCreate(description="string")
        )
        assert isinstance(patched, models.APIKeyRecordRead)
        assert patched.description == "string" and patched.full_key is None
        fetched = get_api.sync(created.id, client=api)
        assert fetched.description == "string"
        rotated = rotate_api.sync(
            created.id, client=api, body=models.RotateRequest(grace_period_seconds=0)
        )
        assert verify(created.full_key) == "NOT_FOUND"
        assert verify(rotated.full_key) == "VALID"
        assert revoke_api.sync(created.id, client=api).status == "revoked"
        assert verify(rotated.full_key) == "REVOKED"

        # The console (the console contract), on the same records.
        console_key = console_create.sync(
            client=api,
            body=models.ApiKeyInput(
                description="console", flat_permissions_list=["writeApplications"]
            ),
        )
        assert verify(console_key.full_key) == "VALID"
        done = console_update.sync(
            str(console_key.id),
            client=api,
            body=models.ApiKeyInput(
                description="string", flat_permissions_list=[], expires_at=None
            ),
        )
        assert done.success is True
        shown = console_get.sync(str(console_key.id), client=api)
        assert (shown.description, shown.flat_permissions_list) == ("string", [])
        assert get_api.sync(console_key.id, client=api).description == "string"
        assert console_revoke.sync(str(console_key.id), client=api).success is True
        assert verify(console_key.full_key) == "REVOKED"


def test_the_api_guides_example_runs_as_written(client_package, fresh_database_url):
    """The generated client's example in docs/api.md, against a first start's admin."""
    example = block("docs/api.md", "A generated client", "python")
    root = next(path for path in sys.path if (Path(path) / client_package).is_dir())
    env = keyplane_env(
        fresh_database_url, KEYPLANE_SECRET_KEY=TEST_SECRET, KEYPLANE_ADMIN_PASSWORD=PASSWORD
    )
    with serving(env) as (base, _):
        wait_until_up(base)
        done = subprocess.run(
            [sys.executable, "-c", example],
            env=env | {"PORT": base.rsplit(":", 1)[1], "PYTHONPATH": root},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "VALID"
