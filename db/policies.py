"""An account's key policy, and the rules every key's create and update obey.

* ``max_key_lifetime_seconds``: an expiry set on a key lies at most that far ahead.
* ``expiry_required``: a key cannot be created, or changed, without an expiry.
* ``member_permissions``: the catalog permissions members may grant their own keys
  (None: the whole catalog). Keyplane's own rights are admins' to grant, always.
* An expiry an admin set binds the key's owner: a member may bring it forward, never
  push it back or remove it.

A key outside the policy is refused with 403 (the request is well formed; the account
does not allow it), on both APIs, in each API's error shape. The policy is read when
a key's expiry or permissions are set; keys made before a stricter policy keep what
they have until they are changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.errors import Forbidden, NotFound
from keyplane.db.models import Account

MAX_LIFETIME_SECONDS = 10 * 365 * 24 * 3600  # the spec's bound: ten years


@dataclass(frozen=True)
class Policy:
    max_key_lifetime_seconds: int | None = None
    expiry_required: bool = False
    member_permissions: tuple[str, ...] | None = None
    on_leak: str = "revoke"  # or "disable": what a leak report does to a key (db.leaks)

    def check_expiry(self, expires_at: datetime | None, now: datetime) -> None:
        """Any caller's new expiry (None: the key would never expire)."""
        refusal = self.expiry_refusal(expires_at, now)
        if refusal is not None:
            raise Forbidden(refusal)

    def expiry_refusal(self, expires_at: datetime | None, now: datetime) -> str | None:
        """Why the policy refuses this expiry; None where it allows it."""
        if expires_at is None:
            if self.expiry_required:
                return "This account's policy requires keys to expire: set an expires_at"
            if self.max_key_lifetime_seconds is not None:
                return self._too_long()
            return None
        limit = self.max_key_lifetime_seconds
        if limit is not None and expires_at > now + timedelta(seconds=limit):
            return self._too_long()
        return None

    def check_member_grants(self, permissions: list[str]) -> None:
        """What a member asks for their own key; admins grant any catalog permission,
        and Keyplane's own rights (``db.permissions.RESERVED``), which members never do."""
        reserved = sorted(p for p in permissions if db.permissions.is_reserved(p))
        if reserved:
            raise Forbidden(f"Only account admins grant {_listed(reserved)}")
        if self.member_permissions is None:
            return
        refused = sorted(set(permissions) - set(self.member_permissions))
        if refused:
            raise Forbidden(
                f"This account lets members grant only {_listed(self.member_permissions)}; "
                f"not {_listed(refused)}"
            )

    def _too_long(self) -> str:
        return (
            f"This account's policy lets keys live at most {self.max_key_lifetime_seconds} "
            "seconds: set an expires_at within that"
        )


def check_member_expiry(
    current: datetime | None, wanted: datetime | None, *, set_by_admin: bool
) -> None:
    """A member changing an expiry that an admin set: earlier only."""
    if set_by_admin and (wanted is None or current is None or wanted > current):
        raise Forbidden("An admin set this key's expiry: you may only bring it forward")


# The account's columns a ``Policy`` is read from: another statement may carry them.
COLUMNS = (
    Account.max_key_lifetime_seconds,
    Account.expiry_required,
    Account.member_permissions,
    Account.on_leak,
)


def of(session: Session, account_id: int) -> Policy:
    row = session.execute(select(*COLUMNS).where(Account.id == account_id)).one_or_none()
    if row is None:
        raise NotFound("Account not found")
    return from_row(row)


def from_row(row: Any) -> Policy:
    """The policy from a row holding ``COLUMNS`` (under their own names)."""
    members = None if row.member_permissions is None else tuple(row.member_permissions)
    return Policy(row.max_key_lifetime_seconds, bool(row.expiry_required), members, row.on_leak)


def replace(
    session: Session, account_id: int, policy: Policy, *, actor: db.audit.Actor, now: datetime
) -> Policy:
    """The whole policy at once (PUT); member permissions must be in the catalog."""
    return change(session, account_id, lambda _: policy, actor=actor, now=now)


def change(
    session: Session,
    account_id: int,
    new: Callable[[Policy], Policy],
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> Policy:
    """The policy ``new`` makes of the one in force, read under the account row's lock:
    of concurrent changes (PATCH), each applies to the one before it, none is lost."""
    # FOR NO KEY UPDATE: key and audit inserts (foreign keys to the account) go on.
    account = session.scalar(
        select(Account).where(Account.id == account_id).with_for_update(key_share=True)
    )
    if account is None:
        raise NotFound("Account not found")
    before = of(session, account_id)
    policy = new(before)
    members = policy.member_permissions
    if members is not None:
        members = tuple(
            db.permissions.require_known(
                session, account_id, list(members), "member_permissions", customer_only=True
            )
        )
    account.max_key_lifetime_seconds = policy.max_key_lifetime_seconds
    account.expiry_required = policy.expiry_required
    account.member_permissions = None if members is None else list(members)
    account.on_leak = policy.on_leak
    session.flush()
    after = Policy(policy.max_key_lifetime_seconds, policy.expiry_required, members, policy.on_leak)
    changes = {
        field: {"from": getattr(before, field), "to": getattr(after, field)}
        for field in (
            "max_key_lifetime_seconds",
            "expiry_required",
            "member_permissions",
            "on_leak",
        )
        if getattr(before, field) != getattr(after, field)
    }
    db.audit.record(
        session, account_id, actor, "policy.updated", ("account", account_id), now, changes
    )
    return after


def _listed(permissions: tuple[str, ...] | list[str]) -> str:
    return ", ".join(permissions) if permissions else "no permissions"
