"""The spec is valid OpenAPI 3.0.3 and every operation in it is served."""

from __future__ import annotations

import importlib

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from keyplane.app import SPEC_PATH

METHODS = {"get", "put", "post", "delete", "patch"}


def _operations() -> list[tuple[str, str, dict]]:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_spec_is_valid_openapi_3_0() -> None:
    spec, _ = read_from_filename(str(SPEC_PATH))
    assert spec["openapi"] == "3.0.3"
    validate(spec)


def test_every_operation_id_resolves_to_a_handler_function() -> None:
    operation_ids = [operation["operationId"] for _, _, operation in _operations()]
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    for operation_id in operation_ids:
        module_name, _, function_name = operation_id.rpartition(".")
        module = importlib.import_module(f"keyplane.handlers.{module_name}")
        assert callable(getattr(module, function_name)), operation_id


def test_every_operation_declares_its_error_statuses() -> None:
    for path, method, operation in _operations():
        statuses = set(operation["responses"])
        assert {"413", "414", "500"} <= statuses, (method, path)  # any request may be too big
        schemes = {name for requirement in operation.get("security", []) for name in requirement}
        if schemes:
            assert "401" in statuses, (method, path)
        if schemes & {"OAuth2PasswordBearer", "APIKeyHeader"}:
            assert {"403", "503"} <= statuses, (method, path)  # accounts, from the database
        if "requestBody" in operation:
            assert "408" in statuses, (method, path)
            assert {"415", "422"} <= statuses or {"400", "415"} <= statuses, (method, path)


def test_the_app_serves_the_spec_and_swagger_ui(client) -> None:
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json()["info"]["title"] == "Keyplane"
    assert {path for path, _, _ in _operations()} == set(served.json()["paths"])
    ui = client.get("/ui/")
    assert ui.status_code == 200
    assert "swagger-ui" in ui.text
