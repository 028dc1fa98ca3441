"""Identities: whoever holds keys, by the account's own ``external_id`` for them.

An identity's credits and rate limits are shared by every key of its ``external_id``
in the account (``db.limits``); a key needs no identity. Changes are audited. Two
writes to one identity serialize on its row (PostgreSQL ``FOR UPDATE``; SQLite's
write lock at ``BEGIN``); two creates of one ``external_id`` meet the unique index,
and the loser replaces what the winner made, as a PUT should.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.errors import NotFound
from keyplane.db.meta import check_meta
from keyplane.db.models import Identity
from keyplane.db.pages import Page, newest_first

NOT_FOUND = "Identity not found"
FIELDS = ("meta", "credits", "ratelimits")


def page(session: Session, account_id: int, *, cursor: str | None, limit: int) -> Page[Identity]:
    query = select(Identity).where(Identity.account_id == account_id)
    return newest_first(session, query, Identity.id, cursor=cursor, limit=limit)


def get(session: Session, account_id: int, external_id: str) -> Identity:
    identity = session.scalar(_one(account_id, external_id))
    if identity is None:
        raise NotFound(NOT_FOUND)
    return identity


def put(
    session: Session,
    account_id: int,
    external_id: str,
    given: dict[str, Any],
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> tuple[Identity, bool]:
    """Create or replace the whole identity; whether it is new."""
    identity, created = db.session.locked_or_added(
        session,
        _one(account_id, external_id),
        lambda: Identity(account_id=account_id, external_id=external_id, created_at=now),
    )
    _apply(identity, {field: given.get(field) for field in FIELDS}, now)
    _audit(session, identity, actor, "identity.created" if created else "identity.replaced", now)
    return identity, created


def update(
    session: Session,
    account_id: int,
    external_id: str,
    given: dict[str, Any],
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> Identity:
    """What ``given`` holds is changed; the rest stays."""
    identity = session.scalar(_one(account_id, external_id).with_for_update())
    if identity is None:
        raise NotFound(NOT_FOUND)
    _apply(identity, given, now)
    _audit(session, identity, actor, "identity.updated", now)
    return identity


def delete(
    session: Session, account_id: int, external_id: str, *, actor: db.audit.Actor, now: datetime
) -> None:
    identity = session.scalar(_one(account_id, external_id).with_for_update())
    if identity is None:
        raise NotFound(NOT_FOUND)
    _audit(session, identity, actor, "identity.deleted", now)
    session.delete(identity)
    session.flush()


def shown(identity: Identity, now: datetime) -> dict[str, Any]:
    """The identity as the API shows it (credits with a due refill applied)."""
    held = db.limits.credits_of(identity, now)
    return {
        "external_id": identity.external_id,
        "meta": identity.meta,
        "credits": None if held is None else held.to_api(),
        "ratelimits": [limit.to_api() for limit in identity.ratelimit_rows],
    }


def _apply(identity: Identity, given: dict[str, Any], now: datetime) -> None:
    if "meta" in given:
        check_meta(given["meta"])
        identity.meta = given["meta"]
    if "credits" in given:
        db.limits.set_credits(identity, db.limits.Credits.from_api(given["credits"]), now)
    if "ratelimits" in given:
        db.limits.set_ratelimits(identity, given["ratelimits"], identity.account_id)
    identity.updated_at = now


def _one(account_id: int, external_id: str) -> Select[Identity]:
    return select(Identity).where(
        Identity.account_id == account_id, Identity.external_id == external_id
    )


def _audit(
    session: Session, identity: Identity, actor: db.audit.Actor, action: str, now: datetime
) -> None:
    session.flush()
    changes = shown(identity, now)
    changes.pop("meta")
    db.audit.record(
        session,
        identity.account_id,
        actor,
        action,
        ("identity", identity.external_id),
        now,
        changes,
    )
