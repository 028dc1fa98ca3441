"""``/v1/keys/verify``: is this key good, and may it do this?

The data plane's one operation: ``async``, one lookup through the worker's key reader
(``db.lookups``) for the key and its verifier together (``db.access.verifying``), no
request transaction. A key with usage limits (credits, rate limits)
then spends them atomically, in a transaction it shares with the spends that queued
beside it (``db.batches``, ``db.limits``); any other key writes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import connexion
from connexion.context import context
from prometheus_client import Counter

from keyplane import db
from keyplane.db import crypto
from keyplane.db.authority import INVALID_CREDENTIALS
from keyplane.db.errors import Unauthorized
from keyplane.db.lookups import Code, Found, judge
from keyplane.db.timefmt import rfc3339
from keyplane.db.usage import hour_of
from keyplane.handlers.context import note, runtime

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
    token_info = context.get("token_info") or {}
    verifier_account: int | None = None
    if "verifier" not in token_info:  # KEYPLANE_VERIFY_OPEN, and no Bearer credential
        if "authorization" in connexion.request.headers:  # another scheme: not one that works
            raise Unauthorized(INVALID_CREDENTIALS)
        found = await current.lookups.key(digests) if digests else None
    else:
        verifier_account, found = await db.access.verifying(
            current.lookups,
            current.usage,
            current.secrets,
            credential=token_info["verifier"],
            account_header=token_info["account"],
            digests=digests,
            now=now,
        )
        note(account_id=verifier_account)
    scopes = (body.get("account_id"), verifier_account)
    if found is not None and any(s is not None and s != found.account_id for s in scopes):
        found = None  # another account's key: told exactly like a key that does not exist
    # Counted for the key's account, else the verifier's (an open verify: found keys only).
    counted_in = found.account_id if found is not None else verifier_account
    code = judge(found, body.get("permissions") or (), now)
    limits: dict[str, Any] = {"ratelimits": [], "credits_remaining": NO_CREDITS}
    if code is Code.VALID and found is not None:
        cost = body.get("cost", 1)
        windows, payers = db.limits.verify_plan(found, body.get("ratelimits") or [], cost)
        if windows or payers:  # only a key with limits writes, in one atomic spend
            outcome = await current.spends(db.limits.Spend(windows, payers, cost, now))
            code = Code(outcome.refused) if outcome.refused else code
            limits = _limits_told(outcome, now)
            if outcome.refused:
                window, detail = _refused_in(outcome, limits, now)
                current.usage.exceeded(found, code.value, window, detail, now)
    VERIFICATIONS.labels(code.value).inc()
    if counted_in is not None:
        current.usage.count(counted_in, found, code.value, body.get("tags") or (), now)
    if found is not None and code in USED:
        current.usage.note(found, digests[0], now)  # the flusher writes it, off this request
    if code is not Code.VALID or found is None:
        # Only a valid key's metadata is told: nothing about anyone else's records. Its
        # holder learns which limit refused, and when it resets.
        told = limits if code in (Code.RATE_LIMITED, Code.USAGE_EXCEEDED) else {}
        return NOTHING_TOLD | {"code": code.value} | told
    rotation = None
    if not found.by_current_secret:
        rotation = {"replaced": True, "expires_at": rfc3339(found.previous_secret_expires_at)}
    identity = None
    if found.identity_id is not None:
        meta = None if found.identity_meta is None else json.loads(found.identity_meta)
        identity = {"external_id": found.external_id, "meta": meta}
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
        "identity": identity,
    } | limits


# A key that was presented while it worked: its last use is noted.
USED = frozenset(
    {Code.VALID, Code.INSUFFICIENT_PERMISSIONS, Code.RATE_LIMITED, Code.USAGE_EXCEEDED}
)
NO_CREDITS: dict[str, int | None] = {"key": None, "identity": None}
NOTHING_TOLD: dict[str, Any] = {
    "valid": False,
    "key_id": None,
    "account_id": None,
    "user_id": None,
    "permissions": [],
    "expires_at": None,
    "rotation": None,
    "external_id": None,
    "meta": None,
    "identity": None,
    "ratelimits": [],
    "credits_remaining": NO_CREDITS,
}


def _refused_in(
    outcome: db.limits.Outcome, told: dict[str, Any], now: datetime
) -> tuple[str, dict[str, Any]]:
    """The window a refusal belongs to, and what refused: the first exceeded rate limit
    (until it resets), or the credits (an hour at a time, while they are spent)."""
    for counted, shown in zip(
        sorted(outcome.windows, key=lambda c: c.window.name), told["ratelimits"], strict=True
    ):
        if counted.exceeded:
            now_ms = int(now.timestamp() * 1000)
            window = f"{counted.window.bucket}@{counted.window.start_ms(now_ms)}"
            return window, {"ratelimit": shown}
    return f"credits@{hour_of(now)}", {"credits_remaining": told["credits_remaining"]}


def _limits_told(outcome: db.limits.Outcome, now: datetime) -> dict[str, Any]:
    now_ms = int(now.timestamp() * 1000)
    return {
        "ratelimits": [
            {
                "name": counted.window.name,
                "limit": counted.window.limit,
                "remaining": counted.remaining,
                "reset_at": rfc3339(counted.window.reset_at(now_ms)),
                "exceeded": counted.exceeded,
            }
            for counted in sorted(outcome.windows, key=lambda c: c.window.name)
        ],
        "credits_remaining": NO_CREDITS | outcome.credits,
    }
