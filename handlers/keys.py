"""``/v1/keys/verify``: is this key good, and may it do this? The key is the credential.

The data plane's one operation: ``async``, one lookup through the worker's key reader
(``db.lookups``), no request transaction and no write.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import Counter

from db import crypto
from db.lookups import Code, Found, judge
from db.timefmt import rfc3339
from handlers.context import runtime

VERIFICATIONS = Counter("keyplane_verifications_total", "Verify outcomes", ["code"])


async def verify(body: dict[str, Any]) -> dict[str, Any]:
    current = runtime()
    now = current.now()
    full_key = body["key"]
    found: Found | None = None
    digests: tuple[str, ...] = ()
    # A key with a wrong prefix, length or checksum costs no query at all.
    if crypto.is_well_formed_api_key(full_key):
        digests = current.secrets.api_key_digests(full_key)
        found = await current.lookups.key(digests)
    scope = body.get("account_id")
    if found is not None and scope is not None and found.account_id != scope:
        found = None  # another account's key: told exactly like a key that does not exist
    code = judge(found, body.get("permissions") or (), now)
    VERIFICATIONS.labels(code.value).inc()
    if found is not None and code in (Code.VALID, Code.INSUFFICIENT_PERMISSIONS):
        current.usage.note(found, digests[0], now)  # the flusher writes it, off this request
    if code is not Code.VALID or found is None:
        # Only a valid key's metadata is told: nothing about anyone else's records.
        return {
            "valid": False,
            "code": code.value,
            "key_id": None,
            "account_id": None,
            "user_id": None,
            "permissions": [],
            "expires_at": None,
            "rotation": None,
            "external_id": None,
            "meta": None,
        }
    rotation = None
    if not found.by_current_secret:
        rotation = {"replaced": True, "expires_at": rfc3339(found.previous_secret_expires_at)}
    return {
        "valid": True,
        "code": code.value,
        "key_id": found.key_id,
        "account_id": found.account_id,
        "user_id": found.user_id,
        "permissions": list(found.permissions),
        "expires_at": rfc3339(found.expires_at),
        "rotation": rotation,
        "external_id": found.external_id,
        "meta": None if found.meta is None else json.loads(found.meta),
    }
