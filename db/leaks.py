"""Leaked keys: a secret scanner's report turned into a key switched off, an audit
event and a ``key.leaked`` event for the account's webhooks, in one transaction.

A report lists tokens found somewhere public. Each is labelled as GitHub's secret
scanning partner program asks: ``true_positive`` when it is a key Keyplane issued (its
current secret, or its previous one within a rotation's grace), else
``false_positive``. A true positive is revoked, or switched off if its account's
policy says ``on_leak: disable``; a key already revoked stays so, and its leak is
still recorded. Reports are remembered by a digest of their signature and body, so
the same signed report sent again is refused (409) and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db import crypto
from keyplane.db.errors import Conflict
from keyplane.db.models import ApiKey, DisabledBy, LeakReport

REPLAYED = "This report was received before: it changes nothing"


@dataclass(frozen=True)
class Found:
    """One token a scanner found, where it found it."""

    token: str
    type: str
    url: str | None = None
    source: str | None = None

    @classmethod
    def from_api(cls, given: dict[str, Any]) -> Found:
        return cls(given["token"], given.get("type", ""), given.get("url"), given.get("source"))


def remember(session: Session, body: bytes, now: datetime) -> None:
    """Refuse a report already acted on (409); else note it, in the caller's transaction.
    A report is its body: the same body under another valid signature (ECDSA's ``s``
    and ``n - s`` both verify) is the same report."""
    digest = hashlib.sha256(body).hexdigest()
    if session.get(LeakReport, digest) is not None:
        raise Conflict(REPLAYED)
    try:
        with session.begin_nested():
            session.add(LeakReport(digest=digest, received_at=now))
    except IntegrityError:  # the same report, acted on at this moment by another request
        raise Conflict(REPLAYED) from None


def act_on(
    session: Session,
    secrets: crypto.Secrets,
    found: Sequence[Found],
    *,
    reporter: str,
    now: datetime,
) -> list[dict[str, str]]:
    """Contain every key among ``found``; the feedback GitHub's program asks for."""
    keys = _keys_of(session, secrets, {one.token for one in found}, now)
    contained: set[int] = set()
    feedback = []
    for one in found:
        key = keys.get(one.token)
        if key is not None and key.id not in contained:  # a token twice: acted on once
            contained.add(key.id)
            _contain(session, key, one, reporter, now)
        feedback.append(
            {
                "token_raw": one.token,
                "token_type": one.type,
                "label": "false_positive" if key is None else "true_positive",
            }
        )
    return feedback


def _keys_of(
    session: Session, secrets: crypto.Secrets, tokens: set[str], now: datetime
) -> dict[str, ApiKey]:
    """The keys whose current secret, or previous one within its grace, each token is,
    in any account: locked together, in id order, as every writer locks keys."""
    by_digest = {
        digest: token
        for token in tokens
        if crypto.is_well_formed_api_key(token)
        for digest in secrets.api_key_digests(token)
    }
    if not by_digest:
        return {}
    in_grace = and_(ApiKey.previous_key_digest.in_(by_digest), ApiKey.previous_key_expires_at > now)
    keys = session.scalars(
        select(ApiKey)
        .where(or_(ApiKey.key_digest.in_(by_digest), in_grace))
        .order_by(ApiKey.id)
        .with_for_update(of=ApiKey)
    ).all()
    found: dict[str, ApiKey] = {}
    for key in keys:
        for digest in (key.key_digest, key.previous_key_digest):
            if digest in by_digest:
                found[by_digest[digest]] = key
    return found


def _contain(session: Session, key: ApiKey, found: Found, reporter: str, now: datetime) -> None:
    how = db.policies.of(session, key.account_id).on_leak
    caller = db.api_keys.Caller.scanner()
    if key.revoked_at is not None:
        taken = "none: already revoked"
    elif how == "disable":
        taken = "disabled" if key.enabled else "switched off for the leak"
        db.api_keys.switch_off(session, caller, key, DisabledBy.LEAK, now)
    else:
        taken = "revoked"
        db.api_keys.revoke(session, caller, key.id, now)
    leak = {"reporter": reporter, "url": found.url, "source": found.source, "type": found.type}
    db.audit.record(
        session,
        key.account_id,
        db.audit.SCANNER,
        "key.leaked",
        ("api_key", key.id),
        now,
        leak | {"action": taken},
    )
    db.api_keys.tell(session, key, "key.leaked", now, leak=leak)
