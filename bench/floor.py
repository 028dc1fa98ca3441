"""The framework's floor: Connexion's ``AsyncApp`` serving verify from the same spec,
with the same request validation, and a handler that does nothing.

Keyplane's verify is measured against it: what the verify path adds to its framework.
Served as ``uvicorn bench.floor:app --workers 2``.
"""

from __future__ import annotations

from typing import Any

import yaml
from connexion import AsyncApp
from connexion.resolver import Resolver

from keyplane.app import SPEC_PATH

VERIFY = "/v1/keys/verify"


async def verify(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    return {"valid": False, "code": "NOT_FOUND"}, 200


def _resolve(operation_id: str) -> Any:
    return verify


spec = yaml.safe_load(SPEC_PATH.read_text())
spec["paths"] = {VERIFY: spec["paths"][VERIFY]}
app = AsyncApp(__name__)
app.add_api(spec, resolver=Resolver(_resolve), strict_validation=True)
