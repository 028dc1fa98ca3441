"""``/v1/keys/verify``: is this key good, and may it do this? The key is the credential."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import db.api_keys
import db.session
from db.api_keys import Code
from keyplane import metrics, runtime
from keyplane.timefmt import rfc3339


def verify(body: dict[str, Any]) -> dict[str, Any]:
    current = runtime.current()
    verdict = db.api_keys.verify(
        db.session.current(),
        current.secrets,
        body["key"],
        body.get("permissions") or [],
        now=current.now(),
        last_used_resolution=timedelta(seconds=current.settings.last_used_resolution_seconds),
    )
    metrics.VERIFICATIONS.labels(verdict.code.value).inc()
    answer: dict[str, Any] = {
        "valid": verdict.code is Code.VALID,
        "code": verdict.code.value,
        "key_id": None,
        "account_id": None,
        "user_id": None,
        "permissions": [],
        "expires_at": None,
        "rotation": None,
    }
    # Only a valid key's metadata is told: nothing about anyone else's records.
    if verdict.code is Code.VALID and verdict.match is not None:
        key = verdict.match.key
        answer |= {
            "key_id": key.id,
            "account_id": key.account_id,
            "user_id": key.user_id,
            "permissions": key.permissions,
            "expires_at": rfc3339(key.expires_at),
        }
        if verdict.match.replaced_secret:
            answer["rotation"] = {
                "replaced": True,
                "expires_at": rfc3339(key.previous_key_expires_at),
            }
    return answer
