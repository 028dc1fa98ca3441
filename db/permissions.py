"""Per-account permission catalogs, and the rule that keys hold only catalog entries.

Granting and removing race safely on PostgreSQL: a grant reads the catalog entries it
needs ``FOR KEY SHARE`` and a removal locks its entry ``FOR UPDATE`` before checking
that no key holds it. Whichever comes first wins; the other then sees its result
(the removal a held permission: 409; the grant a missing one: refused as unknown),
never a foreign-key error. Locks are taken key first, then catalog entries, so the
two never wait on each other in a circle. (SQLite has one writer at a time.)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.errors import Conflict, NotFound, UnknownPermissions
from keyplane.db.models import ApiKeyPermission, Permission

# The catalog every new account starts with (migration 0002 gave it to older ones).
DEFAULT_CATALOG = (
    ("readApplications", "Read applications"),
    ("writeApplications", "Create, update and delete applications"),
)

# Keyplane's own rights: ids under ``keyplane.`` are every account's, outside its
# customer catalog (not listed, added or removed there), granted to keys by admins only.
RESERVED = "keyplane."
VERIFY = "keyplane.verify"  # a key holding it may verify the account's keys
VERIFY_DESCRIPTION = "Verify this account's API keys (Keyplane's own right)"
RIGHTS = ((VERIFY, VERIFY_DESCRIPTION),)  # migration 0010 gave them to older accounts


def is_reserved(permission_id: str) -> bool:
    return permission_id.startswith(RESERVED)


def _customers() -> ColumnElement[bool]:
    """Not Keyplane's own: compared exactly (SQLite's LIKE would ignore case)."""
    return func.substr(Permission.id, 1, len(RESERVED)) != RESERVED


def seed_default(session: Session, account_id: int) -> None:
    session.add_all(
        Permission(account_id=account_id, id=permission_id, description=description)
        for permission_id, description in DEFAULT_CATALOG + RIGHTS
    )
    session.flush()


def catalog(session: Session, account_id: int) -> list[Permission]:
    """The account's customer catalog: its permissions but Keyplane's own rights."""
    return list(
        session.scalars(
            select(Permission)
            .where(Permission.account_id == account_id, _customers())
            .order_by(Permission.id)
        )
    )


def add(
    session: Session,
    account_id: int,
    permission_id: str,
    description: str,
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> Permission:
    if is_reserved(permission_id):
        raise Conflict(f"Permission ids starting with {RESERVED} are Keyplane's own")
    if session.get(Permission, (account_id, permission_id)) is not None:
        raise Conflict("Permission already exists")
    permission = Permission(account_id=account_id, id=permission_id, description=description)
    try:
        with session.begin_nested():
            session.add(permission)
    except IntegrityError:
        raise Conflict("Permission already exists") from None
    db.audit.record(
        session,
        account_id,
        actor,
        "permission.added",
        ("permission", permission_id),
        now,
        {"description": description},
    )
    return permission


def remove(
    session: Session, account_id: int, permission_id: str, *, actor: db.audit.Actor, now: datetime
) -> None:
    permission = session.scalar(
        select(Permission)
        .where(Permission.account_id == account_id, Permission.id == permission_id)
        .with_for_update()
    )
    if permission is None or is_reserved(permission_id):
        raise NotFound("Permission not found")
    held = select(ApiKeyPermission).where(
        ApiKeyPermission.account_id == account_id,
        ApiKeyPermission.permission_id == permission_id,
    )
    if session.scalar(select(exists(held))):
        raise Conflict("Permission is still held by API keys; remove it from them first")
    session.delete(permission)
    session.flush()
    db.audit.record(
        session, account_id, actor, "permission.removed", ("permission", permission_id), now
    )


def require_known(
    session: Session,
    account_id: int,
    permission_ids: list[str],
    field: str = "permissions",
    *,
    customer_only: bool = False,
) -> list[str]:
    """The ids, sorted and without repeats, if every one is in the catalog (with
    ``customer_only``, the customer catalog: Keyplane's own rights count as unknown)."""
    if not permission_ids:
        return []
    # An id with a NUL cannot be in any catalog (and PostgreSQL could not even compare it).
    candidates = {
        p for p in permission_ids if "\x00" not in p and not (customer_only and is_reserved(p))
    }
    known = set(
        session.scalars(
            select(Permission.id)
            .where(Permission.account_id == account_id, Permission.id.in_(candidates))
            .with_for_update(read=True, key_share=True)
        )
    )
    unknown = [i for i, permission_id in enumerate(permission_ids) if permission_id not in known]
    if unknown:
        raise UnknownPermissions(unknown, field)
    return sorted(set(permission_ids))
