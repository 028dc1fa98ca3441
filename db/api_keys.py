"""API keys: the domain operations both surfaces share.

Tenant scoping lives here once: every lookup takes the account (and, for members,
the owner), so another account's key is indistinguishable from a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

import db.permissions
from db.models import ApiKey, ApiKeyPermission, KeyStatus
from keyplane import crypto
from keyplane.errors import NotFound

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
    return key, full_key


def find(session: Session, scope: Scope, key_id: int) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.id == key_id, scope.clause()))
    if key is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return key


def by_digest(session: Session, digest: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.key_digest == digest))


def page(
    session: Session,
    scope: Scope,
    *,
    now: datetime,
    status: KeyStatus | None,
    before_id: int | None,
    limit: int,
) -> tuple[list[ApiKey], bool]:
    """Newest first, keyset-paginated on id; returns the page and whether more follow."""
    query = select(ApiKey).where(scope.clause())
    if status is not None:
        query = query.where(_status_clause(status, now))
    if before_id is not None:
        query = query.where(ApiKey.id < before_id)
    rows = list(session.scalars(query.order_by(ApiKey.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def update(session: Session, key: ApiKey, changes: dict[str, Any], now: datetime) -> ApiKey:
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    for field, value in changes.items():
        if field == "permissions":
            _grant_exactly(session, key, value)
        else:
            setattr(key, field, value)
    key.updated_at = now
    session.flush()
    return key


def revoke(session: Session, key: ApiKey, now: datetime) -> ApiKey:
    """Irreversible; revoking a revoked key changes nothing (idempotent, like Stripe)."""
    if key.revoked_at is None:
        key.revoked_at = now
        key.updated_at = now
        session.flush()
    return key


def _grant_exactly(session: Session, key: ApiKey, permission_ids: list[str]) -> None:
    wanted = set(db.permissions.require_known(session, key.account_id, permission_ids))
    key.permission_links = [link for link in key.permission_links if link.permission_id in wanted]
    held = set(key.permissions)
    key.permission_links += [
        ApiKeyPermission(account_id=key.account_id, permission_id=p) for p in sorted(wanted - held)
    ]


def _status_clause(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    not_expired = or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
    if status is KeyStatus.REVOKED:
        return ApiKey.revoked_at.is_not(None)
    if status is KeyStatus.EXPIRED:
        return and_(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    return and_(ApiKey.revoked_at.is_(None), not_expired)
