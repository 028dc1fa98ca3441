"""Usage limits, spent exactly: credits and rate limits.

**Credits** (``models.Credited``, on a key and on an identity): each ``VALID`` verify
spends its ``cost``. A refill sets the remaining credits to the refill's amount at each
refill moment: 00:00 UTC every day (``daily``), or 00:00 UTC on ``refill_day`` of every
month (``monthly``; a day past a short month's end is that month's last day). There is
no scheduler: whatever next spends or changes the credits applies a due refill, under
the row's lock, judged from ``refilled_at``: once, however many spend at once.

**Rate limits** count uses in fixed windows: the window of a limit of ``limit`` per
``duration_ms`` is ``[floor(now / duration) * duration, + duration)`` in milliseconds
since 1970. Within one window at most ``limit`` uses are ever counted, exactly (a use
that would pass it is refused and counts nothing); a new window starts from nothing.
So over any span of ``duration_ms`` at most ``2 * limit`` uses pass, the fixed window's
known edge, and ``reset_at`` is the window's end.

**All or nothing.** A verify's spend counts every rate limit it checks and then spends
the credits of the key and of its identity; one refusal and it changes nothing
anywhere. Spends are committed in batches (``db.batches``): a ``Ledger`` reads every
row of a batch once, locked until the commit (SQLite takes its write lock at
``BEGIN``; PostgreSQL locks each row as it reads it, in one order for every batch), and
judges each spend in the order it arrived against what the ones before it left. So a
count is never negative and never spent twice, on any number of workers and instances.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.authority import Authority
from keyplane.db.errors import Conflict, NotFound
from keyplane.db.lookups import Found
from keyplane.db.models import (
    ApiKey,
    Credited,
    Identity,
    RateLimit,
    RateLimitOverride,
    RateLimitWindow,
    RefillInterval,
)

MAX_COST = 1000  # credits or uses one verify may spend (the spec's bound)
MAX_CREDITS = 2**53 - 1  # exactly representable in every JSON client


@dataclass(frozen=True)
class Refill:
    interval: RefillInterval
    amount: int
    day: int | None = None  # monthly only: 1..31

    def last_moment(self, now: datetime) -> datetime:
        """The latest refill moment at or before ``now`` (UTC)."""
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.interval is RefillInterval.DAILY:
            return midnight
        this_month = _on_day(midnight.year, midnight.month, self.day or 1)
        if this_month <= now:
            return this_month
        year, month_before = divmod(midnight.year * 12 + midnight.month - 2, 12)
        return _on_day(year, month_before + 1, self.day or 1)


def _on_day(year: int, month: int, day: int) -> datetime:
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(day, last), tzinfo=UTC)


@dataclass(frozen=True)
class Credits:
    """Credits as the API shows and takes them."""

    remaining: int
    refill: Refill | None = None

    def to_api(self) -> dict[str, Any]:
        refill = None
        if self.refill is not None:
            refill = {"interval": self.refill.interval.value, "amount": self.refill.amount}
            if self.refill.day is not None:
                refill["refill_day"] = self.refill.day
        return {"remaining": self.remaining, "refill": refill}

    @classmethod
    def from_api(cls, given: dict[str, Any] | None) -> Credits | None:
        if given is None:
            return None
        refill = given.get("refill")
        if refill is None:
            return cls(given["remaining"])
        interval = RefillInterval(refill["interval"])
        # A daily refill has no day: one given with it is ignored.
        day = refill.get("refill_day") if interval is RefillInterval.MONTHLY else None
        return cls(given["remaining"], Refill(interval, refill["amount"], day))


class Holding(Protocol):
    """Credits as a row holds them: a key's or an identity's (``models.Credited``), a
    batch's ``Balance``, or a key as a page of keys reads it."""

    credits_remaining: int | None
    refill_interval: RefillInterval | None
    refill_amount: int | None
    refill_day: int | None
    refilled_at: datetime | None


def credits_of(row: Holding, now: datetime) -> Credits | None:
    """What ``row`` holds now: a refill that is due shows, though not yet written."""
    if row.credits_remaining is None:
        return None
    if row.refill_interval is None or row.refill_amount is None:
        return Credits(row.credits_remaining)
    refill = Refill(row.refill_interval, row.refill_amount, row.refill_day)
    due = _due(row, refill, now) is not None
    return Credits(refill.amount if due else row.credits_remaining, refill)


def settle(row: Holding, now: datetime) -> Credits | None:
    """``row``'s credits now, a due refill applied to the row (and so written with it)."""
    held = credits_of(row, now)
    if held is not None and held.refill is not None:
        moment = _due(row, held.refill, now)
        if moment is not None:
            row.refilled_at, row.credits_remaining = moment, held.remaining
    return held


def _due(row: Holding, refill: Refill, now: datetime) -> datetime | None:
    """The refill moment ``row`` has not had yet, if one has passed."""
    moment = refill.last_moment(now)
    return moment if row.refilled_at is None or row.refilled_at < moment else None


def set_credits(row: Credited, given: Credits | None, now: datetime) -> None:
    """Replace ``row``'s credits (a create, a PATCH, a PUT): a refill counts from now."""
    row.credits_remaining = None if given is None else given.remaining
    refill = None if given is None else given.refill
    row.refill_interval = None if refill is None else refill.interval
    row.refill_amount = None if refill is None else refill.amount
    row.refill_day = None if refill is None else refill.day
    row.refilled_at = None if refill is None else now


# -- spending -----------------------------------------------------------------------------

RATE_LIMITED, USAGE_EXCEEDED = "RATE_LIMITED", "USAGE_EXCEEDED"


@dataclass(frozen=True)
class Window:
    """One rate limit checked by one verify (or one standalone call)."""

    name: str
    owner: str  # whose limit it counts: "key:7", "identity:3", "ns:3:signups:10.0.0.1"
    limit: int
    duration_ms: int
    cost: int

    @property
    def bucket(self) -> str:
        """The counter's name: a limit given a new duration counts afresh."""
        return f"{self.owner}:{self.name}:{self.duration_ms}"

    def start_ms(self, now_ms: int) -> int:
        return now_ms - now_ms % self.duration_ms

    def end_ms(self, now_ms: int) -> int:
        return self.start_ms(now_ms) + self.duration_ms

    def reset_at(self, now_ms: int) -> datetime:
        return datetime.fromtimestamp(self.end_ms(now_ms) / 1000, UTC)

    def fits(self, used: int) -> bool:
        """Whether this use fits beside ``used`` (a cost of 0 needs one use left)."""
        return used + max(self.cost, 1) <= self.limit


@dataclass(frozen=True)
class Counted:
    """A window as one use left it: its uses now, and whether the use did not fit."""

    window: Window
    used: int
    exceeded: bool

    @property
    def remaining(self) -> int:
        return max(self.window.limit - self.used, 0)


class Windows(Protocol):
    """Where rate-limit windows are counted: the database (``DatabaseWindows``) or
    Redis (``db.redis_windows``). ``count`` is all or nothing: either every window
    takes its cost, or (one would pass its limit) none does."""

    in_database: bool

    def count(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]: ...

    def peek(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]: ...

    def ping(self) -> None:
        """Raise ``db.errors.Unavailable`` unless the windows can be counted now."""

    def close(self) -> None: ...


class DatabaseWindows:
    """Windows as rows, read and locked with the rest of a batch's rows and counted in
    its ``Ledger``."""

    in_database = True

    def count(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        return ledger.count(windows, now_ms)

    def peek(self, ledger: Ledger, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        return ledger.peek(windows, now_ms)

    def ping(self) -> None:
        pass  # rows in the database: readiness checks the database itself

    def close(self) -> None:
        pass  # rows in the database: nothing of their own to close


@dataclass(frozen=True)
class Payer:
    """A row whose credits a verify spends: a key, or its identity."""

    table: type[ApiKey] | type[Identity]
    row_id: int


@dataclass
class Outcome:
    """What a spend found: each window's uses, each payer's remaining credits."""

    refused: str | None = None  # RATE_LIMITED or USAGE_EXCEEDED
    windows: list[Counted] = field(default_factory=list)
    credits: dict[str, int | None] = field(default_factory=dict)  # by payer: key, identity


@dataclass(frozen=True)
class Spend:
    """What one verify (or one standalone use) spends."""

    windows: Sequence[Window]
    payers: dict[str, Payer]
    cost: int
    now: datetime

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)


@dataclass
class Balance:
    """A payer's credits as a batch holds them, its row locked (``models.Credited``)."""

    credits_remaining: int | None
    refill_interval: RefillInterval | None
    refill_amount: int | None
    refill_day: int | None
    refilled_at: datetime | None
    changed: bool = False

    def can_pay(self, cost: int, now: datetime) -> bool:
        """A cost of 0 only checks that a credit is left."""
        held = credits_of(self, now)
        return held is None or held.remaining >= max(cost, 1)

    def pay(self, cost: int, now: datetime) -> None:
        held = settle(self, now)
        if held is not None:
            self.credits_remaining = held.remaining - cost
            self.changed = True

    def left(self, now: datetime) -> int | None:
        held = credits_of(self, now)
        return None if held is None else held.remaining


def spend_together(counter: Windows, spends: Sequence[Spend]) -> list[Outcome]:
    """Each of ``spends`` judged in order, in one transaction (``db.batches``)."""
    with db.session.apart(writes=True) as session:
        return _spend_in(session, counter, spends)


def _spend_in(session: Session, counter: Windows, spends: Sequence[Spend]) -> list[Outcome]:
    ledger = Ledger(session, counter, spends)
    outcomes = [ledger.spend(one) for one in spends]
    ledger.write()
    return outcomes


class Ledger:
    """Every row a batch of spends touches, read once and locked until the commit; each
    spend judged in turn against what the ones before it left; what changed written
    back in one statement per table.

    The locks are taken in one order by every batch: windows (by bucket and start, each
    made where missing), then keys and identities (by id). SQLite holds its write lock
    from ``BEGIN`` (``db.engine``); PostgreSQL locks each row as it reads it.
    Nothing else changes these rows meanwhile, so each judgement is exact.
    """

    def __init__(self, session: Session, counter: Windows, spends: Sequence[Spend]) -> None:
        self.connection = session.connection()
        self.counter = counter
        self.balances: dict[tuple[type[ApiKey] | type[Identity], int], Balance] = {}
        self.used: dict[tuple[str, int], int] = {}  # by (bucket, window start)
        self.changed: set[tuple[str, int]] = set()
        self._lock(spends)

    def _lock(self, spends: Sequence[Spend]) -> None:
        wanted = sorted(
            {
                (w.bucket, w.start_ms(one.now_ms), w.end_ms(one.now_ms))
                for one in spends
                for w in one.windows
            }
            if self.counter.in_database
            else ()
        )
        if wanted:
            made = [{"w_bucket": b, "w_start": s, "w_ends": e} for b, s, e in wanted]
            counters = self.connection.execute(_locking_windows(self.connection.dialect.name), made)
            self.used = {(bucket, start): int(used) for bucket, start, used in counters}
        for model in (ApiKey, Identity):
            ids = {p.row_id for one in spends for p in one.payers.values() if p.table is model}
            if ids:
                rows = self.connection.execute(_locking_balances(model), {"ids": sorted(ids)})
                for row in rows:
                    self.balances[model, row[0]] = Balance(*row[1:])

    def spend(self, one: Spend) -> Outcome:
        """Count ``one``'s windows and spend its credits, all or nothing: a window that
        is full answers RATE_LIMITED, before credits that are out (USAGE_EXCEEDED)."""
        # A payer whose row has gone (an identity deleted since the lookup) pays nothing.
        payers = {n: self.balances.get((p.table, p.row_id)) for n, p in one.payers.items()}
        pays = all(b is None or b.can_pay(one.cost, one.now) for b in payers.values())
        judge = self.counter.count if pays else self.counter.peek
        outcome = Outcome(windows=judge(self, one.windows, one.now_ms))
        if any(counted.exceeded for counted in outcome.windows):
            outcome.refused = RATE_LIMITED
        elif not pays:
            outcome.refused = USAGE_EXCEEDED
        else:
            for balance in payers.values():
                if balance is not None:
                    balance.pay(one.cost, one.now)
        outcome.credits = {n: None if b is None else b.left(one.now) for n, b in payers.items()}
        return outcome

    def count(self, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        """``DatabaseWindows.count``: every window takes its cost, or none does."""
        held = self.peek(windows, now_ms)
        if any(counted.exceeded for counted in held):
            return held
        for counted in held:
            at = (counted.window.bucket, counted.window.start_ms(now_ms))
            self.used[at] = counted.used + counted.window.cost
            self.changed.add(at)
        return [Counted(c.window, c.used + c.window.cost, False) for c in held]

    def peek(self, windows: Sequence[Window], now_ms: int) -> list[Counted]:
        found = []
        for window in windows:
            used = self.used.get((window.bucket, window.start_ms(now_ms)), 0)
            found.append(Counted(window, used, not window.fits(used)))
        return found

    def write(self) -> None:
        for model in (ApiKey, Identity):
            rows = [
                {"b_id": row_id, "b_remaining": b.credits_remaining, "b_refilled": b.refilled_at}
                for (table, row_id), b in sorted(self.balances.items(), key=lambda i: i[0][1])
                if table is model and b.changed
            ]
            if rows:
                self.connection.execute(_paying(model), rows)
        counts = [
            {"w_bucket": bucket, "w_start": start, "w_used": self.used[bucket, start]}
            for bucket, start in sorted(self.changed)
        ]
        if counts:
            self.connection.execute(_counting(), counts)


# The statements of a spend are built once: building one costs more than running it.


@functools.cache
def _locking_windows(dialect_name: str) -> Any:
    """Each window made where missing and locked (an update to what it holds), with its
    uses: one statement for the whole batch."""
    table = RateLimitWindow.__table__
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (
        dialect.insert(table)
        .values(
            bucket=bindparam("w_bucket"),
            window_start_ms=bindparam("w_start"),
            used=0,
            ends_at_ms=bindparam("w_ends"),
        )
        .on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start_ms],
            set_={"used": table.c.used},
        )
        .returning(table.c.bucket, table.c.window_start_ms, table.c.used)
    )


@functools.cache
def _locking_balances(model: type[ApiKey] | type[Identity]) -> Any:
    table = model.__table__.c
    return (
        select(
            table.id,
            table.credits_remaining,
            table.refill_interval,
            table.refill_amount,
            table.refill_day,
            table.refilled_at,
        )
        .where(table.id.in_(bindparam("ids", expanding=True)))
        .order_by(table.id)
        .with_for_update()
    )


@functools.cache
def _counting() -> Any:
    table = RateLimitWindow.__table__.c
    return (
        update(cast(Table, RateLimitWindow.__table__))
        .where(table.bucket == bindparam("w_bucket"), table.window_start_ms == bindparam("w_start"))
        .values(used=bindparam("w_used"))
    )


@functools.cache
def _paying(model: type[ApiKey] | type[Identity]) -> Any:
    whole = cast(Table, model.__table__)
    return (
        update(whole)
        .where(whole.c.id == bindparam("b_id"))
        .values(credits_remaining=bindparam("b_remaining"), refilled_at=bindparam("b_refilled"))
    )


def purge_windows(session: Session, now: datetime) -> int:
    """Windows that have ended count nothing any more: how many went."""
    gone = session.execute(
        delete(RateLimitWindow).where(RateLimitWindow.ends_at_ms < int(now.timestamp() * 1000))
    )
    return int(getattr(gone, "rowcount", 0) or 0)


def change_credits(row: Credited, op: str, value: int, now: datetime) -> int:
    """``set``, ``increment`` or ``decrement`` the remaining credits of a locked row (a
    due refill first); never below zero nor past ``MAX_CREDITS``. What is left. Only
    ``set`` gives credits (and no refill) to a row of unlimited use."""
    current = settle(row, now)
    if current is None and op != "set":
        raise Conflict(f"This key has unlimited use: {op} needs credits (set them first)")
    current = current or Credits(0, None)
    remaining = {"set": value, "increment": current.remaining + value}.get(
        op, current.remaining - value
    )
    if not 0 <= remaining <= MAX_CREDITS:
        # The value is valid; the balance it meets is what refuses it.
        raise Conflict(f"Credits would be {remaining}: they stay between 0 and {MAX_CREDITS}")
    row.credits_remaining = remaining
    return remaining


def set_ratelimits(
    owner: ApiKey | Identity, given: Sequence[dict[str, Any]] | None, account_id: int
) -> None:
    """Replace ``owner``'s rate limits with ``given`` (as the API takes them): a limit
    kept by name is changed in place (a new row of a name still held would collide with
    the old one, deleted only later in the flush)."""
    # Of two limits of one name, the later one given stands (as JSON's later key does).
    named = {limit["name"]: limit for limit in given or []}
    held = {row.name: row for row in owner.ratelimit_rows}
    rows = []
    for limit in named.values():
        row = held.get(limit["name"]) or RateLimit(account_id=account_id, name=limit["name"])
        row.limit = limit["limit"]
        row.duration_ms = limit["duration_ms"]
        row.auto_apply = limit.get("auto_apply", False)
        rows.append(row)
    owner.ratelimit_rows = rows


# -- verify and the standalone limit ------------------------------------------------------


def verify_plan(
    found: Found, named: Sequence[dict[str, Any]], cost: int
) -> tuple[list[Window], dict[str, Payer]]:
    """What a ``VALID`` verify of ``found`` spends: every auto-applied rate limit and
    each one the request names (a key's limit before its identity's of the same name),
    and ``cost`` credits from the key and from its identity, where they have them."""
    costs = {limit["name"]: limit.get("cost", 1) for limit in named}
    windows: dict[str, Window] = {}
    # The key's limits first: a name the key has is the key's, not the identity's.
    for name, limit, duration, auto, on_key in sorted(found.ratelimits, key=lambda r: not r[4]):
        if name in windows or not (auto or name in costs):
            continue
        owner = f"key:{found.key_id}" if on_key else f"identity:{found.identity_id}"
        windows[name] = Window(name, owner, limit, duration, costs.get(name, 1))
    payers: dict[str, Payer] = {}
    if found.credits is not None:
        payers["key"] = Payer(ApiKey, found.key_id)
    if found.identity_credits is not None and found.identity_id is not None:
        payers["identity"] = Payer(Identity, found.identity_id)
    return list(windows.values()), payers


@dataclass(frozen=True)
class Asked:
    """A standalone limit as a request asks for it (``POST /v1/ratelimit``)."""

    namespace: str
    identifier: str
    limit: int
    duration_ms: int
    cost: int


def limit_apart(counter: Windows, authority: Authority, asked: Asked, now: datetime) -> Outcome:
    """Count one use of a standalone limit in the caller's account, its identifier's
    override (if any) in place of the limit asked; the caller's standing confirmed
    under the same transaction, as for any change (``db.authority``)."""
    assert authority.account_id is not None
    with db.session.apart(writes=True) as session:
        db.authority.claim(session, authority)
        db.authority.confirm(session, now=now)
        override = session.get(
            RateLimitOverride, (authority.account_id, asked.namespace, asked.identifier)
        )
        limit, duration = (
            (override.limit, override.duration_ms)
            if override is not None
            else (asked.limit, asked.duration_ms)
        )
        owner = f"ns:{authority.account_id}:{asked.namespace}:{asked.identifier}"
        window = Window("", owner, limit, duration, asked.cost)
        (outcome,) = _spend_in(session, counter, [Spend([window], {}, asked.cost, now)])
        return outcome


# -- overrides of standalone limits ---------------------------------------------------------


def put_override(
    session: Session,
    account_id: int,
    namespace: str,
    identifier: str,
    given: dict[str, Any],
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> tuple[RateLimitOverride, bool]:
    """Set one identifier's own limit in a namespace: the override, and whether it is new."""
    key = {"account_id": account_id, "namespace": namespace, "identifier": identifier}
    values = {"limit": given["limit"], "duration_ms": given["duration_ms"]}
    override, created = db.session.locked_or_added(
        session,
        select(RateLimitOverride).filter_by(**key),
        lambda: RateLimitOverride(**key, **values),
    )
    override.limit, override.duration_ms = values["limit"], values["duration_ms"]
    action = "ratelimit.override_set"
    db.audit.record(session, account_id, actor, action, _target(override), now, values)
    return override, created


def delete_override(
    session: Session,
    account_id: int,
    namespace: str,
    identifier: str,
    *,
    actor: db.audit.Actor,
    now: datetime,
) -> None:
    override = session.get(
        RateLimitOverride, (account_id, namespace, identifier), with_for_update=True
    )
    if override is None:
        raise NotFound("No override for that identifier in that namespace")
    session.delete(override)
    db.audit.record(
        session, account_id, actor, "ratelimit.override_deleted", _target(override), now
    )


def _target(override: RateLimitOverride) -> tuple[str, str]:
    return "ratelimit_override", f"{override.namespace}/{override.identifier}"
