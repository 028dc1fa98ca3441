"""Every status the spec documents for an operation has its own test.

Convention (Polar's and Unkey's): ``tests/handlers/test_<module>.py`` holds a class
``Test<Function>`` per operation with a ``test_<status>_...`` method per status. 500s
and the database's 503s are shown for every operation at once by ``tests/test_errors.py``;
408, 413 and 414 (a slow or oversized body, an overlong URL) by ``tests/test_hostile_input.py``.
"""

from __future__ import annotations

import importlib

import pytest

from tests.test_spec import _operations

SHOWN_FOR_EVERY_OPERATION = {"408", "413", "414", "500", "503"}


def _class_name(function: str) -> str:
    return "Test" + "".join(part.capitalize() for part in function.split("_"))


@pytest.mark.parametrize(
    ("operation_id", "statuses"),
    [(op["operationId"], sorted(op["responses"])) for _, _, op in _operations()],
)
def test_each_documented_status_has_a_test(operation_id, statuses):
    module_name, _, function = operation_id.rpartition(".")
    module = importlib.import_module(f"tests.handlers.test_{module_name}")
    cls = getattr(module, _class_name(function), None)
    assert cls is not None, f"{module.__name__} lacks {_class_name(function)}"
    tests = [name for name in dir(cls) if name.startswith("test_")]
    missing = [
        status
        for status in statuses
        if status not in SHOWN_FOR_EVERY_OPERATION
        and not any(name.startswith(f"test_{status}_") for name in tests)
    ]
    assert not missing, f"{operation_id}: no test for {missing}"
