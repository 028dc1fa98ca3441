"""API keys: the domain operations both surfaces share, and verification.

Tenant scoping lives here once: every lookup takes the account (and, for members,
the owner), so another account's key is indistinguishable from a missing one. Every
change is written to the audit trail here too, so no surface can forget it.

How concurrent changes to one key serialize: ``_locked`` reads the key ``FOR UPDATE``
(PostgreSQL holds the row lock until the transaction ends; on SQLite the writer's
``BEGIN IMMEDIATE`` already serializes every write) and every change is computed
from that locked, freshly read row. Two PATCHes, rotations or revocations of one key
therefore run one after the other, each on the result of the one before, and the
final record is exactly one request's result. A PATCH that would change nothing is
answered from a plain read instead (``change``): it writes nothing, so it is as if it
ran at that read.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Executable,
    Insert,
    String,
    and_,
    bindparam,
    cast,
    inspect,
    select,
    true,
)
from sqlalchemy import update as update_statement
from sqlalchemy.orm import (
    Session,
    joinedload,
    lazyload,
    make_transient_to_detached,
    raiseload,
    selectinload,
)
from sqlalchemy.orm.attributes import flag_modified

from keyplane import db
from keyplane.db import crypto, jsonsql
from keyplane.db.errors import Conflict, Forbidden, InvalidInput, NotFound
from keyplane.db.limits import Holding
from keyplane.db.meta import check_meta
from keyplane.db.models import (
    Account,
    ApiKey,
    ApiKeyPermission,
    AuditEvent,
    DisabledBy,
    KeyStatus,
    RateLimit,
    key_status,
    key_status_clause,
)
from keyplane.db.pages import Page, newest_first
from keyplane.db.timefmt import rfc3339

NOT_FOUND_MESSAGE = "API key not found"
_CANNOT_ROTATE = {
    KeyStatus.REVOKED: "A revoked key cannot be rotated",
    KeyStatus.EXPIRED: "An expired key cannot be rotated",
}
# Fields a PATCH may change (the keys of ``changes`` in ``update``), in the audit's order.
EDITABLE = (
    "description",
    "expires_at",
    "permissions",
    "external_id",
    "meta",
    "enabled",
    "credits",
    "ratelimits",
)
# What only an admin sets: a member's own key could otherwise spend without limit.
ADMINS_ONLY = frozenset({"credits", "ratelimits"})
LIMITS_ARE_ADMINS = "Only an admin sets a key's credits and rate limits"
EDITABLE_FIELDS = frozenset(EDITABLE)
# What a PATCH changes without a decision of its own (``_write_plain``): text, which
# the database compares as ``_same`` does.
PLAIN = frozenset({"description", "external_id"})
KEY_UPDATED = "key.updated"
# A key's attributes by the names of their columns: a row of ``api_keys`` made an ApiKey.
_COLUMNS = {attribute.key: attribute.columns[0].name for attribute in inspect(ApiKey).column_attrs}
OWNER_GONE = "The key's owner is no longer an active member of this account"
ROTATE_AFTER_LEAK = (
    "This key's secret was reported leaked: rotate it first, then an admin can switch it on"
)
_ONLY_AN_ADMIN_TURNS_ON = {
    DisabledBy.ADMIN: "An admin switched this key off: only an admin can switch it on",
    DisabledBy.REMOVAL: "This key was switched off when its owner left the account:"
    " only an admin can switch it on",
    DisabledBy.DEACTIVATION: "This key was switched off when its owner was deactivated:"
    " only an admin can switch it on",
    DisabledBy.LEAK: "This key was switched off when it was reported leaked:"
    " only an admin can switch it on",
}


class _Unset:
    """An argument not given (``None`` means something: no expiry)."""


UNSET = _Unset()


@dataclass(frozen=True)
class Scope:
    """Which keys a caller may see: one account, and within it one owner or all."""

    account_id: int | None
    owner_id: int | None = None

    @classmethod
    def everything(cls) -> Scope:
        """Every key of every account: for the operator's CLI only."""
        return cls(account_id=None)

    def clause(self) -> ColumnElement[bool]:
        condition: ColumnElement[bool] = true()
        if self.account_id is not None:
            condition = and_(condition, ApiKey.account_id == self.account_id)
        if self.owner_id is not None:
            condition = and_(condition, ApiKey.user_id == self.owner_id)
        return condition


@dataclass(frozen=True)
class Caller:
    """Who asks for a key's change: the keys they reach, the name the audit trail gives
    them, and (issuing a key) whose it is. An admin's changes are judged as an admin's:
    any catalog permission, an expiry that binds the key's owner."""

    scope: Scope
    actor: db.audit.Actor
    user_id: int | None = None
    is_admin: bool = False

    @classmethod
    def operator(cls) -> Caller:
        """The command line, for incidents: every key of every account."""
        return cls(Scope.everything(), db.audit.OPERATOR, is_admin=True)

    @classmethod
    def scanner(cls) -> Caller:
        """A leak report (``db.leaks``): any key it names, in any account."""
        return cls(Scope.everything(), db.audit.SCANNER, is_admin=True)


@dataclass(frozen=True)
class NewKey:
    """What a new key is made with (both APIs; the console sets the first three)."""

    description: str | None = None
    expires_at: datetime | None = None
    permissions: Sequence[str] = ()
    external_id: str | None = None
    meta: dict[str, Any] | None = None
    enabled: bool = True
    credits: dict[str, Any] | None = None  # as the API takes them (``db.limits.Credits``)
    ratelimits: Sequence[dict[str, Any]] = ()
    owner_id: int | None = None  # another member, named by an admin (None: the caller)


def issue(
    session: Session, secrets: crypto.Secrets, caller: Caller, new: NewKey, now: datetime
) -> tuple[ApiKey, str]:
    """Create a key for the caller, in their account and within its policy; returns the
    record and the full key, which is never seen again."""
    account_id, user_id, by_admin = caller.scope.account_id, caller.user_id, caller.is_admin
    assert account_id is not None and user_id is not None, "a key is issued to a member"
    check_meta(new.meta)
    if not db.users.is_active_member(session, account_id, user_id):
        raise Forbidden("You are not a member of this account")
    if new.owner_id is not None and new.owner_id != user_id:
        if not by_admin:
            raise Forbidden("Only account admins create keys for another member")
        if not db.users.is_active_member(session, account_id, new.owner_id):
            raise InvalidInput("No active member of this account has this id", ["body", "user_id"])
        user_id = new.owner_id
    policy = db.policies.of(session, account_id)
    policy.check_expiry(new.expires_at, now)
    granted = db.permissions.require_known(session, account_id, list(new.permissions))
    if not by_admin:
        policy.check_member_grants(granted)
    full_key = crypto.generate_api_key()
    key = ApiKey(
        account_id=account_id,
        user_id=user_id,
        key_prefix=crypto.display_prefix(full_key),
        key_digest=secrets.api_key_digest(full_key),
        description=new.description,
        expires_at=new.expires_at,
        expiry_set_by_admin=by_admin and new.expires_at is not None,
        external_id=new.external_id,
        meta=new.meta,
        enabled=new.enabled,
        disabled_by=None if new.enabled else DisabledBy.OWNER,
        created_at=now,
        updated_at=now,
    )
    key.permission_links = [
        ApiKeyPermission(account_id=account_id, permission_id=p) for p in granted
    ]
    if (new.credits is not None or new.ratelimits) and not by_admin:
        raise Forbidden(LIMITS_ARE_ADMINS)
    db.limits.set_credits(key, db.limits.Credits.from_api(new.credits), now)
    db.limits.set_ratelimits(key, new.ratelimits, account_id)
    session.add(key)
    session.flush()
    created = _snapshot(key) | {"key_prefix": key.key_prefix}
    if key.user_id != caller.user_id:  # an admin's key for another member: both named
        created["user_id"] = key.user_id
    _audit(session, key, caller.actor, "key.created", now, created)
    return key, full_key


def find(session: Session, scope: Scope, key_id: int) -> ApiKey:
    """The key with its permissions joined: one round trip, where the relationship's
    default would send a second."""
    key = (
        session.execute(
            select(ApiKey)
            .where(ApiKey.id == key_id, scope.clause())
            .options(joinedload(ApiKey.permission_links))
        )
        .unique()
        .scalar_one_or_none()
    )
    if key is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return key


def change(caller: Caller, key_id: int, changes: dict[str, Any], now: datetime) -> ApiKey:
    """A PATCH, on either API. ``changes`` holds only what the request sets (an omitted
    field is unchanged; ``None`` clears it); the policy judges what changes.

    The key is read first, apart from the request's transaction: a PATCH that would
    change nothing is answered from that read (as if it ran then) and writes nothing:
    no lock, no ``updated_at``, no audit event, as Stripe sends no ``*.updated`` event
    when nothing changed. A body of ``PLAIN`` fields only, for a key within the policy
    in an account without webhooks (as read), is written by one statement provided the
    key is still as read (``_write_plain``). Any other PATCH locks the key in the
    request's transaction and changes it from the row as it is then (``_update``).
    The key returned after a ``PLAIN`` change has its columns only (both surfaces
    answer a PATCH from them), no relationship loaded.
    """
    check_meta(changes.get("meta"))
    with db.session.apart(writes=False) as reading:
        key, policy, listening = _read_for_change(reading, caller.scope, key_id, changes)
    changing = _changing(key, changes)
    if not changing:
        return key
    session = db.session.current()
    # Only a body of ``PLAIN`` fields: any other field sent is judged on the locked row.
    # A key outside the policy as read: ``_update`` says why (``_within_policy``).
    within = policy.expiry_refusal(key.expires_at, now) is None
    if set(changes) <= PLAIN and not listening and within:
        wanted = {f: changes[f] for f in changing}
        kept = {f: changes[f] for f in changes if f not in changing}
        written = _write_plain(session, caller, key, policy, wanted, kept, now)
        if written is not None:
            return written
    return _update(session, caller, key_id, changes, now)


def _read_for_change(
    session: Session, scope: Scope, key_id: int, changes: dict[str, Any]
) -> tuple[ApiKey, db.policies.Policy, bool]:
    """``find``, with the account's policy and whether it has a webhook, in one round
    trip: the key's permissions and rate limits only if ``changes`` sets them (none is
    shown by a PATCH's answer)."""
    wanted = {"permissions": ApiKey.permission_links, "ratelimits": ApiKey.ratelimit_rows}
    found = (
        session.execute(
            select(
                ApiKey,
                *db.policies.COLUMNS,
                db.webhooks.listening(ApiKey.account_id).label("listening"),
            )
            .join(Account, Account.id == ApiKey.account_id)
            .where(ApiKey.id == key_id, scope.clause())
            .options(
                *(
                    joinedload(relationship) if field in changes else raiseload(relationship)
                    for field, relationship in wanted.items()
                )
            )
        )
        .unique(lambda row: row[0].id)
        .one_or_none()
    )
    if found is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return found[0], db.policies.from_row(found), bool(found.listening)


def _write_plain(
    session: Session,
    caller: Caller,
    read: ApiKey,
    policy: db.policies.Policy,
    wanted: dict[str, Any],
    kept: dict[str, Any],
    now: datetime,
) -> ApiKey | None:
    """Write a change of ``PLAIN`` fields (``wanted``; ``kept``: those the body sets to
    what they hold), judged as ``_update`` judges it, with the key's row lock taken by
    the request's last statement before its commit. On PostgreSQL one statement locks
    the key, checks that each field still differs from what is wanted and that the key
    and the policy are as ``read`` and ``policy`` were judged, confirms the caller's
    standing (``db.authority.Standing``), changes the key and writes its audit event
    from the locked row's values. On SQLite two do, inside the write transaction that
    ``BEGIN IMMEDIATE`` already serializes: the audit event written from the key's row
    if all is as judged, then the key changed. The statements are built
    once per shape of change (``_plain_statements``), and given this one's values.

    The statement does not commit by itself: the request's commit, which a request out
    of time never sends (``keyplane.deadline``), is what makes it count. An
    autocommitted statement ran faster, but one held on a lock when the request ran
    out of time committed after its 503 (``tests/test_failures.py`` caught it).

    None, with nothing written, where ``_update`` decides instead: the key's expiry or
    the policy changed since they were read, a field already holds what is wanted
    (another writer got there first), the account has a webhook (``tell`` writes its
    events), or the caller's standing is for ``db.authority.confirm`` to judge.
    """
    standing = db.authority.standing(session)
    if standing is None or caller.scope.account_id is None:
        return None
    fields = tuple(sorted(wanted, key=EDITABLE.index))
    owned = caller.scope.owner_id is not None
    postgresql = session.get_bind().dialect.name == "postgresql"
    unchanged = tuple(sorted(kept))
    statements = _plain_statements(fields, unchanged, owned, standing.as_admin, postgresql)
    values = (
        {f"new_{f}": wanted[f] for f in fields}
        | {f"kept_{f}": kept[f] for f in unchanged}
        | {"key_id": read.id, "scope_account_id": caller.scope.account_id, "now": now}
        | ({"scope_owner_id": caller.scope.owner_id} if owned else {})
        | {
            "read_expires_at": read.expires_at,
            "read_lifetime": policy.max_key_lifetime_seconds,
            "read_expiry_required": policy.expiry_required,
        }
        | standing.parameters
        | db.audit.bound_values(caller.actor, now)
    )
    if postgresql:
        [statement] = statements
        row = session.execute(statement, values).one_or_none()
        if row is not None:
            db.authority.confirmed(session)
    else:
        judged_and_audited, change = statements
        if session.execute(judged_and_audited, values).first() is None:
            return None
        row = session.execute(change, values).one()
        db.authority.confirmed(session)
    if row is None:
        return None
    key = ApiKey(**{name: row._mapping[column] for name, column in _COLUMNS.items()})
    make_transient_to_detached(key)
    return key


@functools.cache
def _plain_statements(
    fields: tuple[str, ...],
    kept: tuple[str, ...],
    owned: bool,
    as_admin: bool,
    postgresql: bool,
) -> tuple[Executable, ...]:
    """``_write_plain``'s statements for a change of ``fields`` that ``kept`` fields
    still hold what the body sets, by a caller who sees one owner's keys (``owned``)
    or all the account's, acting as an admin or not."""
    keys = ApiKey.__table__.c
    # Parameters are never named as a column: an INSERT or UPDATE given a parameter of
    # its column's name would set that column too.
    scope = [keys.id == bindparam("key_id"), keys.account_id == bindparam("scope_account_id")]
    if owned:
        scope.append(keys.user_id == bindparam("scope_owner_id"))
    scoped = (
        select(
            *keys,
            Account.max_key_lifetime_seconds,
            Account.expiry_required,
            db.webhooks.listening(keys.account_id).label("listening"),
        )
        .join_from(ApiKey, Account, Account.id == keys.account_id)
        .where(*scope)
    )
    changed = (
        update_statement(ApiKey)
        .values({f: bindparam(f"new_{f}", type_=keys[f].type) for f in fields})
        .values(updated_at=bindparam("now", type_=keys.updated_at.type))
        .returning(*keys)
    )

    def audit(current: Any, *where: ColumnElement[bool], joined: Any = None) -> Insert:
        """Writes the event, from the key's row as it is before the change."""
        diff = jsonsql.object_of(
            **{
                f: jsonsql.object_of(
                    **{"from": current[f], "to": bindparam(f"new_{f}", type_=keys[f].type)}
                )
                for f in fields
            }
        )
        actor, at, address = db.audit.bound()
        about = ("api_key", cast(current.id, String))
        event = db.audit.event(
            current.account_id, actor, KEY_UPDATED, about, at, diff, address=address
        )
        return db.audit.written_by_select(event, *where, joined=joined)

    if not postgresql:
        # Inside the write transaction that BEGIN IMMEDIATE took: the event is written
        # only if the key is as judged, then the key changes (no one else can meanwhile).
        current = scoped.subquery("current")
        standing = db.authority.Standing.clause(current.c.account_id, as_admin=as_admin)
        judged_and_audited = audit(current.c, _judged(current.c, fields, kept), standing)
        return (
            judged_and_audited.returning(AuditEvent.id),
            changed.where(keys.id == bindparam("key_id")),
        )
    # The key locked first, and judged after: every condition is on the locked row
    # (``old``), so that the caller's rows are share-locked after the key's.
    old = scoped.with_for_update(of=ApiKey).cte("old")
    standing = db.authority.Standing.clause(old.c.account_id, as_admin=as_admin)
    written = changed.where(ApiKey.id == old.c.id, _judged(old.c, fields, kept), standing).cte(
        "written"
    )
    audited = audit(old.c, joined=old.join(written, written.c.id == old.c.id))
    return (select(written).add_cte(audited.cte("audit")),)


def _judged(columns: Any, fields: tuple[str, ...], kept: tuple[str, ...]) -> ColumnElement[bool]:
    """The key (``columns`` of ``_plain_statements``' select) would change as wanted,
    still holds the ``kept`` fields as the body sets them, and is judged as the read
    and the policy were: its expiry and the policy as read, and no webhook to tell."""
    keys = ApiKey.__table__.c
    return and_(
        *(columns[f].is_distinct_from(bindparam(f"new_{f}", type_=keys[f].type)) for f in fields),
        *(
            columns[f].is_not_distinct_from(bindparam(f"kept_{f}", type_=keys[f].type))
            for f in kept
        ),
        columns.expires_at.is_not_distinct_from(
            bindparam("read_expires_at", type_=keys.expires_at.type)
        ),
        columns.max_key_lifetime_seconds.is_not_distinct_from(bindparam("read_lifetime")),
        columns.expiry_required == bindparam("read_expiry_required"),
        ~columns.listening,
    )


def _changing(key: ApiKey, changes: dict[str, Any]) -> set[str]:
    """The fields ``changes`` would change. Permissions compare as sets, ``meta`` as
    canonical JSON (so ``1`` and ``true`` differ)."""
    held = _snapshot(key, changes)
    return {field for field, wanted in changes.items() if not _same(field, held[field], wanted)}


def _same(field: str, held: Any, wanted: Any) -> bool:
    if field == "permissions":
        return set(held) == set(wanted)
    if field == "credits":
        wanted = _credits(wanted)
    if field in ("meta", "credits"):
        return json.dumps(held, sort_keys=True) == json.dumps(wanted, sort_keys=True)
    if field == "ratelimits":
        return bool(held == _ratelimits(wanted))
    return bool(held == wanted)


def _credits(given: dict[str, Any] | None) -> dict[str, Any] | None:
    """Credits as the API takes them, in the one form they are shown in."""
    parsed = db.limits.Credits.from_api(given)
    return None if parsed is None else parsed.to_api()


def _ratelimits(given: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return sorted(
        ({"auto_apply": False, **limit} for limit in given or []), key=lambda one: one["name"]
    )


def _locked(
    session: Session, scope: Scope, key_id: int, *, with_permissions: bool = True
) -> ApiKey:
    """The key, read afresh and locked until the transaction ends (see the module's note)."""
    # The permissions come by a second statement, after the lock is held, never joined
    # to this one: PostgreSQL re-reads only the locked row once a waited-for lock is
    # granted, so joined permissions would be those from before the writer it waited on
    # (the concurrent PATCH tests caught this as duplicate permission links).
    # Whether the account has webhooks comes in the same round trip: a change of a key
    # of an account without any then costs no read more while the lock is held.
    found = session.execute(
        select(ApiKey, db.webhooks.listening(ApiKey.account_id))
        .where(ApiKey.id == key_id, scope.clause())
        .with_for_update(of=ApiKey)
        .execution_options(populate_existing=True)
        # Without them, one round trip less while the lock is held (read if touched).
        .options(selectinload(ApiKey.permission_links) if with_permissions else lazyload("*"))
    ).one_or_none()
    if found is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    key, listening = found
    db.webhooks.heard(session, key.account_id, listening=bool(listening))
    return key


class Shown(Holding, Protocol):
    """A key as the APIs show it: a stored ``ApiKey``, or a row of ``page``."""

    id: int
    account_id: int
    user_id: int
    key_prefix: str
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    external_id: str | None
    meta: dict[str, Any] | None
    enabled: bool
    disabled_by: DisabledBy | None

    @property
    def permissions(self) -> list[str]: ...
    @property
    def ratelimits(self) -> list[dict[str, Any]]: ...


# A page of keys is one query of plain rows, each with its permissions and rate limits
# as the API shows them, built by the database as JSON: loading 21 keys and their
# collections as ORM objects was half of a list's time.
_LISTED = select(
    *(ApiKey.__table__.c[name] for name in (*Shown.__annotations__, *Holding.__annotations__)),
    jsonsql.array_of(
        select(ApiKeyPermission.permission_id)
        .where(ApiKeyPermission.api_key_id == ApiKey.id)
        .order_by(jsonsql.bytewise(ApiKeyPermission.permission_id))  # as ``ApiKey``'s
        .correlate(ApiKey)
    ).label("permissions"),
    jsonsql.array_of(
        select(
            jsonsql.object_of(
                name=RateLimit.name,
                limit=RateLimit.limit,
                duration_ms=RateLimit.duration_ms,
                auto_apply=RateLimit.auto_apply,
            )
        )
        .where(RateLimit.key_id == ApiKey.id)
        .order_by(RateLimit.name)
        .correlate(ApiKey)
    ).label("ratelimits"),
)


def page(
    session: Session,
    scope: Scope,
    *,
    now: datetime,
    cursor: str | None,
    limit: int,
    status: KeyStatus | None = None,
    external_id: str | None = None,
) -> Page[Shown]:
    # Each row's permissions are read by a subquery correlated to it: PostgreSQL plans
    # per page row, 21 index probes, whatever its statistics say. (With none yet, a
    # bulk import not yet analyzed, its guess for ``IN`` of 21 ids was a tenth of the
    # table, and it scanned all of it.)
    query = _LISTED.where(scope.clause())
    if status is not None:
        query = query.where(key_status_clause(status, now))
    if external_id is not None:
        query = query.where(ApiKey.external_id == external_id)
    return newest_first(session, query, ApiKey.id, cursor=cursor, limit=limit)


def _update(
    session: Session, caller: Caller, key_id: int, changes: dict[str, Any], now: datetime
) -> ApiKey:
    """The locked write of ``change``. What changes is judged again from the locked row
    (another writer may have made the same change meanwhile: then nothing is written).
    The key ends within the account's policy (``_within_policy``), unless the change
    only switches it off: turning a key off never widens what it can do."""
    key = _locked(session, caller.scope, key_id, with_permissions="permissions" in changes)
    by_admin = caller.is_admin
    changing = _changing(key, changes)
    if not changing:
        return key
    before = _snapshot(key, changing)
    policy = db.policies.of(session, key.account_id)
    if "expires_at" in changing:
        _set_expiry(key, changes["expires_at"], by_admin=by_admin)
    if "permissions" in changing:
        _grant_exactly(session, key, changes["permissions"], policy, by_admin=by_admin)
    if "enabled" in changing:
        _switch(session, key, changes["enabled"], caller)
    if changing & ADMINS_ONLY and not by_admin:
        raise Forbidden(LIMITS_ARE_ADMINS)
    if "credits" in changing:
        credits_given = db.limits.Credits.from_api(changes["credits"])
        db.limits.set_credits(key, credits_given, now)
    if "ratelimits" in changing:
        db.limits.set_ratelimits(key, changes["ratelimits"], key.account_id)
    for field in ("description", "external_id", "meta"):
        if field in changing:
            setattr(key, field, changes[field])
            if field == "meta":  # the ORM compares JSON with ==: to it, 1 and true are one
                flag_modified(key, "meta")
    if changing != {"enabled"} or key.enabled:
        _within_policy(policy, key, now)
    key.updated_at = now
    session.flush()
    after = _snapshot(key, changing)
    diff = {f: {"from": before[f], "to": after[f]} for f in sorted(changing, key=EDITABLE.index)}
    _audit(session, key, caller.actor, "key.updated", now, diff)
    if "enabled" in changing and not key.enabled:
        tell(session, key, "key.disabled", now)
    return key


def _set_expiry(key: ApiKey, wanted: datetime | None, *, by_admin: bool) -> None:
    """A member may bring an admin's expiry forward only; the policy is judged after."""
    if not by_admin:
        db.policies.check_member_expiry(
            key.expires_at, wanted, set_by_admin=key.expiry_set_by_admin
        )
    key.expires_at = wanted
    if by_admin:
        key.expiry_set_by_admin = wanted is not None


def _switch(session: Session, key: ApiKey, on: bool, caller: Caller) -> None:
    """Off: remember who switched it off. On: only an admin, unless the owner switched
    it off themselves, and never while the owner is not an active member."""
    if not on:
        key.enabled = False
        by_owner = caller.user_id == key.user_id
        key.disabled_by = DisabledBy.OWNER if by_owner else DisabledBy.ADMIN
        return
    if not caller.is_admin and key.disabled_by in _ONLY_AN_ADMIN_TURNS_ON:
        raise Forbidden(_ONLY_AN_ADMIN_TURNS_ON[key.disabled_by])
    if key.disabled_by is DisabledBy.LEAK:
        raise Conflict(ROTATE_AFTER_LEAK)
    if not db.users.is_active_member(session, key.account_id, key.user_id):
        raise Conflict(OWNER_GONE)
    key.enabled = True
    key.disabled_by = None


def switch_off(
    session: Session, caller: Caller, key: ApiKey, reason: DisabledBy, now: datetime
) -> None:
    """Switch off a locked key for ``reason`` (a key already off is now off for it too,
    so that its owner cannot switch it on); audited as an update when it was on."""
    was_on = key.enabled
    key.enabled, key.disabled_by, key.updated_at = False, reason, now
    if reason is DisabledBy.LEAK:  # the leaked secret may be the one in its grace
        key.previous_key_digest = key.previous_key_expires_at = None
    session.flush()
    if was_on:
        changed = {"enabled": {"from": True, "to": False}}
        _audit(session, key, caller.actor, "key.updated", now, changed)
        tell(session, key, "key.disabled", now)


def _within_policy(policy: db.policies.Policy, key: ApiKey, now: datetime) -> None:
    """Every path that changes a key or issues it a secret leaves it within the policy:
    a key made before a stricter policy is brought into it by the same request, or
    the request is refused (403)."""
    policy.check_expiry(key.expires_at, now)


def revoke(session: Session, caller: Caller, key_id: int, now: datetime) -> ApiKey:
    """Irreversible; revoking a revoked key changes nothing and is not audited again."""
    key = _locked(session, caller.scope, key_id)
    if key.revoked_at is None:
        key.revoked_at = now
        key.updated_at = now
        key.previous_key_digest = key.previous_key_expires_at = None
        session.flush()
        _audit(session, key, caller.actor, "key.revoked", now)
    return key


def rotate(
    session: Session,
    secrets: crypto.Secrets,
    caller: Caller,
    key_id: int,
    now: datetime,
    *,
    grace: timedelta,
    expires_at: datetime | _Unset | None = UNSET,
) -> tuple[ApiKey, str]:
    """A new secret for the same record; the old one verifies until ``now + grace``.

    A second rotation cuts the secret before the old one at once: at most two secrets
    verify at any time. A revoked or expired key is refused (409): it cannot verify
    again, so a new secret for it would be a key that never works. The key must end
    within the account's policy: ``expires_at`` sets a new expiry with the new secret
    (as a PATCH would), and a key without one that the policy requires is refused.
    """
    key = _locked(session, caller.scope, key_id)
    status = key_status(key, now)
    if status in _CANNOT_ROTATE:  # a disabled key may be rotated: it can be enabled again
        raise Conflict(_CANNOT_ROTATE[status])
    changes: dict[str, Any] = {}
    if not isinstance(expires_at, _Unset) and expires_at != key.expires_at:
        changes["expires_at"] = {"from": key.expires_at, "to": expires_at}
        _set_expiry(key, expires_at, by_admin=caller.is_admin)
    _within_policy(db.policies.of(session, key.account_id), key, now)
    full_key = crypto.generate_api_key()
    if key.disabled_by is DisabledBy.LEAK:
        # The leaked secret ends now, whatever grace was asked; the key stays off, for
        # an admin to switch on.
        grace, key.disabled_by = timedelta(0), DisabledBy.ADMIN
    if grace > timedelta(0):
        key.previous_key_digest, key.previous_key_expires_at = key.key_digest, now + grace
    else:
        key.previous_key_digest = key.previous_key_expires_at = None
    key.key_digest = secrets.api_key_digest(full_key)
    key.key_prefix = crypto.display_prefix(full_key)
    key.updated_at = now
    session.flush()
    changes |= {
        "key_prefix": key.key_prefix,
        "previous_secret_valid_until": key.previous_key_expires_at,
    }
    _audit(session, key, caller.actor, "key.rotated", now, changes)
    return key, full_key


def _grant_exactly(
    session: Session,
    key: ApiKey,
    permission_ids: list[str],
    policy: db.policies.Policy,
    *,
    by_admin: bool,
) -> None:
    wanted = set(db.permissions.require_known(session, key.account_id, permission_ids))
    if not by_admin:  # a member may keep what an admin granted, and add what members may
        policy.check_member_grants(sorted(wanted - set(key.permissions)))
    key.permission_links = [link for link in key.permission_links if link.permission_id in wanted]
    held = set(key.permissions)
    key.permission_links += [
        ApiKeyPermission(account_id=key.account_id, permission_id=p) for p in sorted(wanted - held)
    ]


def lock_owned(session: Session, account_id: int | None, user_id: int) -> None:
    """Lock every key of ``user_id`` (in one account, or all) before the owner's
    membership or activity changes.

    Locks are taken keys first, then the owner's rows, everywhere: a key's change
    locks the key, then share-locks its owner's rows (``db.users.is_active_member``).
    Taking them in the other order here would deadlock against it.
    """
    session.scalars(select(ApiKey.id).where(_owned(account_id, user_id)).with_for_update()).all()


def disable_owned(
    session: Session, account_id: int | None, user_id: int, now: datetime, reason: DisabledBy
) -> int:
    """Switch off every enabled key of ``user_id`` (in one account, or all): how many.

    A key its owner had switched off themselves is now off for ``reason`` too, so that
    coming back does not let the owner turn it on again.
    """
    switched = session.scalars(
        update_statement(ApiKey)
        .where(_owned(account_id, user_id), ApiKey.enabled.is_(True))
        .values(enabled=False, disabled_by=reason, updated_at=now)
        .returning(ApiKey.id)
    )
    ids = switched.all()
    session.execute(
        update_statement(ApiKey)
        .where(_owned(account_id, user_id), ApiKey.disabled_by == DisabledBy.OWNER)
        .values(disabled_by=reason)
    )
    if ids:
        keys = session.scalars(
            select(ApiKey)
            .where(ApiKey.id.in_(ids))
            .order_by(ApiKey.id)
            .execution_options(populate_existing=True)
        )
        for key in keys:
            tell(session, key, "key.disabled", now)
    return len(ids)


def _owned(account_id: int | None, user_id: int) -> ColumnElement[bool]:
    condition = ApiKey.user_id == user_id
    return condition if account_id is None else and_(condition, ApiKey.account_id == account_id)


def _snapshot(key: ApiKey, only: Container[str] = EDITABLE_FIELDS) -> dict[str, Any]:
    """The editable fields (those in ``only``), as the audit trail shows them."""
    special: dict[str, Callable[[], Any]] = {
        "permissions": lambda: key.permissions,
        "credits": lambda: _stored_credits(key),
        "ratelimits": lambda: [limit.to_api() for limit in key.ratelimit_rows],
    }
    return {
        field: special[field]() if field in special else getattr(key, field)
        for field in EDITABLE
        if field in only
    }


def _stored_credits(key: ApiKey) -> dict[str, Any] | None:
    """The credits as set (a refill not yet applied shows as set): what a PATCH compares."""
    if key.credits_remaining is None:
        return None
    refill = None
    if key.refill_interval is not None and key.refill_amount is not None:
        refill = db.limits.Refill(key.refill_interval, key.refill_amount, key.refill_day)
    return db.limits.Credits(key.credits_remaining, refill).to_api()


def shown_brief(key: Shown, now: datetime, *, full_key: str | None = None) -> dict[str, Any]:
    """``APIKeyRecordRead``, exactly the fields the v1 contract documents."""
    return {
        "id": key.id,
        "key_prefix": key.key_prefix,
        "user_id": key.user_id,
        "status": key_status(key, now).value,
        "created_at": rfc3339(key.created_at),
        "expires_at": rfc3339(key.expires_at),
        "description": key.description,
        "full_key": full_key,
    }


def shown(key: Shown, now: datetime, *, full_key: str | None = None) -> dict[str, Any]:
    """``APIKeyRecord``, as the v1 API and webhook events show a key: the seed's fields,
    the permissions, the last use, and the customer's own fields."""
    return shown_brief(key, now, full_key=full_key) | {
        "permissions": key.permissions,
        "last_used_at": rfc3339(key.last_used_at),
        "external_id": key.external_id,
        "meta": key.meta,
        "enabled": key.enabled,
        "disabled_by": None if key.disabled_by is None else key.disabled_by.value,
        "credits": shown_credits(key, now),
        "ratelimits": key.ratelimits,
    }


def shown_credits(key: Shown, now: datetime) -> dict[str, Any] | None:
    """The credits as they stand at ``now`` (a refill due counts)."""
    held = db.limits.credits_of(key, now)
    return None if held is None else held.to_api()


def _audit(
    session: Session,
    key: ApiKey,
    actor: db.audit.Actor,
    action: str,
    now: datetime,
    changes: dict[str, Any] | None = None,
) -> None:
    """The trail, and the event for the account's webhooks, in the change's transaction."""
    db.audit.record(session, key.account_id, actor, action, ("api_key", key.id), now, changes)
    if action in db.webhooks.EVENT_TYPES:
        tell(session, key, action, now, changes)


def tell(
    session: Session,
    key: ApiKey,
    event_type: str,
    now: datetime,
    changes: dict[str, Any] | None = None,
    *,
    dedupe: str | None = None,
    **extra: Any,
) -> None:
    """``event_type`` about ``key`` to the account's webhooks (``db.webhooks.emit``):
    the key as the API shows it, and for an update what each changed field was."""

    def data() -> dict[str, Any]:  # built only if an endpoint listens
        told: dict[str, Any] = {"object": shown(key, now)}
        if event_type == "key.updated" and changes:
            told["previous_attributes"] = {
                field: db.audit.jsonable(change["from"]) for field, change in changes.items()
            }
        return told | extra

    about = f"api_key:{key.id}"
    db.webhooks.emit(session, key.account_id, event_type, data, about=about, now=now, dedupe=dedupe)


def warn_expiring(session: Session, now: datetime, within: timedelta, limit: int = 500) -> int:
    """``key.expiring`` for keys that expire within ``within`` and have not been warned
    of that expiry (a new expiry is warned of again): how many. Keys another writer holds
    are skipped, and warned of on the next round."""
    keys = session.scalars(
        select(ApiKey)
        .where(
            ApiKey.expires_at > now,
            ApiKey.expires_at <= now + within,
            ApiKey.revoked_at.is_(None),
            (ApiKey.expiry_warned_for.is_(None)) | (ApiKey.expiry_warned_for != ApiKey.expires_at),
        )
        .order_by(ApiKey.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for key in keys:
        key.expiry_warned_for = key.expires_at
        tell(session, key, "key.expiring", now)
    session.flush()
    return len(keys)


def change_credits(
    session: Session, caller: Caller, key_id: int, op: str, value: int, now: datetime
) -> ApiKey:
    """``set``, ``increment`` or ``decrement`` a key's credits, on its locked row (a
    verify spending at once waits, or is waited for): admins only, audited."""
    if not caller.is_admin:
        raise Forbidden(LIMITS_ARE_ADMINS)
    key = _locked(session, caller.scope, key_id, with_permissions=False)
    remaining = db.limits.change_credits(key, op, value, now)
    key.updated_at = now
    session.flush()
    changes = {"op": op, "value": value, "remaining": remaining}
    _audit(session, key, caller.actor, "key.credits_changed", now, changes)
    return key
