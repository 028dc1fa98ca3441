"""API keys: the domain operations both surfaces share, and verification.

Tenant scoping lives here once: every lookup takes the account (and, for members,
the owner), so another account's key is indistinguishable from a missing one. Every
change is written to the audit trail here too, so no surface can forget it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

import db.audit
import db.permissions
from db.models import ApiKey, ApiKeyPermission, KeyStatus
from db.pages import Page, newest_first
from keyplane import crypto
from keyplane.errors import Conflict, NotFound

NOT_FOUND_MESSAGE = "API key not found"
# Fields a PATCH may change; the keys of ``changes`` in ``update``.
EDITABLE_FIELDS = frozenset({"description", "expires_at", "permissions"})


@dataclass(frozen=True)
class Scope:
    """Which keys a caller may see: one account, and within it one owner or all."""

    account_id: int
    owner_id: int | None = None

    def clause(self) -> ColumnElement[bool]:
        condition = ApiKey.account_id == self.account_id
        if self.owner_id is not None:
            condition = and_(condition, ApiKey.user_id == self.owner_id)
        return condition


def issue(
    session: Session,
    secrets: crypto.Secrets,
    *,
    account_id: int,
    user_id: int,
    description: str | None,
    expires_at: datetime | None,
    permissions: list[str],
    actor: db.audit.Actor,
    now: datetime,
) -> tuple[ApiKey, str]:
    """Create a key; returns the record and the full key, which is never seen again."""
    granted = db.permissions.require_known(session, account_id, permissions)
    full_key = crypto.generate_api_key()
    key = ApiKey(
        account_id=account_id,
        user_id=user_id,
        key_prefix=crypto.display_prefix(full_key),
        key_digest=secrets.api_key_digest(full_key),
        description=description,
        expires_at=expires_at,
        created_at=now,
        updated_at=now,
    )
    key.permission_links = [
        ApiKeyPermission(account_id=account_id, permission_id=p) for p in granted
    ]
    session.add(key)
    session.flush()
    _audit(session, key, actor, "key.created", now, _snapshot(key) | {"key_prefix": key.key_prefix})
    return key, full_key


def find(session: Session, scope: Scope, key_id: int) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, scope.clause()))
    if key is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return key


def by_id(session: Session, key_id: int) -> ApiKey:
    """Any account's key: for the operator's CLI only."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return key


def page(
    session: Session,
    scope: Scope,
    *,
    now: datetime,
    status: KeyStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[ApiKey]:
    query = select(ApiKey).where(scope.clause())
    if status is not None:
        query = query.where(_status_clause(status, now))
    return newest_first(session, query, ApiKey.id, cursor=cursor, limit=limit)


def update(
    session: Session, key: ApiKey, changes: dict[str, Any], actor: db.audit.Actor, now: datetime
) -> ApiKey:
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    before = _snapshot(key)
    for field, value in changes.items():
        if field == "permissions":
            _grant_exactly(session, key, value)
        else:
            setattr(key, field, value)
    key.updated_at = now
    session.flush()
    after = _snapshot(key)
    diff = {f: {"from": before[f], "to": after[f]} for f in after if before[f] != after[f]}
    _audit(session, key, actor, "key.updated", now, diff)
    return key


def revoke(session: Session, key: ApiKey, actor: db.audit.Actor, now: datetime) -> ApiKey:
    """Irreversible; revoking a revoked key changes nothing (idempotent, like Stripe)."""
    if key.revoked_at is None:
        key.revoked_at = now
        key.updated_at = now
        key.previous_key_digest = key.previous_key_expires_at = None
        session.flush()
        _audit(session, key, actor, "key.revoked", now)
    return key


def rotate(
    session: Session,
    secrets: crypto.Secrets,
    key: ApiKey,
    *,
    grace: timedelta,
    actor: db.audit.Actor,
    now: datetime,
) -> str:
    """A new secret for the same record; the old one verifies until ``now + grace``.

    A second rotation cuts the secret before the old one at once: at most two secrets
    verify at any time.
    """
    if key.revoked_at is not None:
        raise Conflict("A revoked key cannot be rotated")
    full_key = crypto.generate_api_key()
    if grace > timedelta(0):
        key.previous_key_digest, key.previous_key_expires_at = key.key_digest, now + grace
    else:
        key.previous_key_digest = key.previous_key_expires_at = None
    key.key_digest = secrets.api_key_digest(full_key)
    key.key_prefix = crypto.display_prefix(full_key)
    key.updated_at = now
    session.flush()
    changes = {
        "key_prefix": key.key_prefix,
        "previous_secret_valid_until": key.previous_key_expires_at,
    }
    _audit(session, key, actor, "key.rotated", now, changes)
    return full_key


@dataclass(frozen=True)
class Match:
    """The key a secret belongs to, and whether it is the secret a rotation replaced."""

    key: ApiKey
    replaced_secret: bool


def by_secret(session: Session, digest: str, now: datetime) -> Match | None:
    key = session.scalar(
        select(ApiKey).where(or_(ApiKey.key_digest == digest, ApiKey.previous_key_digest == digest))
    )
    if key is None:
        return None
    if key.key_digest == digest:
        return Match(key, replaced_secret=False)
    grace_ends = key.previous_key_expires_at
    return Match(key, replaced_secret=True) if grace_ends and grace_ends > now else None


class Code(enum.StrEnum):
    VALID = "VALID"
    NOT_FOUND = "NOT_FOUND"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    INSUFFICIENT_PERMISSIONS = "INSUFFICIENT_PERMISSIONS"


@dataclass(frozen=True)
class Verdict:
    code: Code
    match: Match | None = None


def verify(
    session: Session,
    secrets: crypto.Secrets,
    full_key: str,
    required: list[str],
    *,
    now: datetime,
    last_used_resolution: timedelta,
) -> Verdict:
    """Reads the key afresh every time: revocation, expiry, permission changes and
    rotation show on the very next verify, on every worker. A malformed key is
    NOT_FOUND without touching the database."""
    if not crypto.is_well_formed_api_key(full_key):
        return Verdict(Code.NOT_FOUND)
    match = by_secret(session, secrets.api_key_digest(full_key), now)
    if match is None:
        return Verdict(Code.NOT_FOUND)
    status = match.key.status_at(now)
    if status is KeyStatus.REVOKED:
        return Verdict(Code.REVOKED, match)
    if status is KeyStatus.EXPIRED:
        return Verdict(Code.EXPIRED, match)
    _touch(session, match.key, now, last_used_resolution)
    if not set(required) <= set(match.key.permissions):
        return Verdict(Code.INSUFFICIENT_PERMISSIONS, match)
    return Verdict(Code.VALID, match)


def _touch(session: Session, key: ApiKey, now: datetime, resolution: timedelta) -> None:
    """``last_used_at`` to within ``resolution``: at most one write per key per period."""
    if key.last_used_at is None or now - key.last_used_at >= resolution:
        key.last_used_at = now
        session.flush()


def _grant_exactly(session: Session, key: ApiKey, permission_ids: list[str]) -> None:
    wanted = set(db.permissions.require_known(session, key.account_id, permission_ids))
    key.permission_links = [link for link in key.permission_links if link.permission_id in wanted]
    held = set(key.permissions)
    key.permission_links += [
        ApiKeyPermission(account_id=key.account_id, permission_id=p) for p in sorted(wanted - held)
    ]


def _snapshot(key: ApiKey) -> dict[str, Any]:
    return {
        "description": key.description,
        "expires_at": key.expires_at,
        "permissions": key.permissions,
    }


def _audit(
    session: Session,
    key: ApiKey,
    actor: db.audit.Actor,
    action: str,
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> None:
    db.audit.record(
        session,
        account_id=key.account_id,
        actor=actor,
        action=action,
        target=("api_key", key.id),
        changes=changes,
        now=now,
    )


def _status_clause(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    not_expired = or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
    if status is KeyStatus.REVOKED:
        return ApiKey.revoked_at.is_not(None)
    if status is KeyStatus.EXPIRED:
        return and_(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    return and_(ApiKey.revoked_at.is_(None), not_expired)
