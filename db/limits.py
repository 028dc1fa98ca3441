"""Usage limits, spent exactly: credits and rate limits.

**Credits** (``models.Credited``, on a key and on an identity): each ``VALID`` verify
spends its ``cost``. A refill sets the remaining credits to the refill's amount at each
refill moment: 00:00 UTC every day (``daily``), or 00:00 UTC on ``refill_day`` of every
month (``monthly``; a day past a short month's end is that month's last day). There is
no scheduler: a refill due is applied by the very statement that next spends or sets
the credits, judged from ``refilled_at``, so it happens once, however many spend at once.

**Rate limits** count uses in fixed windows: the window of a limit of ``limit`` per
``duration_ms`` is ``[floor(now / duration) * duration, + duration)`` in milliseconds
since 1970. Within one window at most ``limit`` uses are ever counted, exactly (a use
that would pass it is refused and counts nothing); a new window starts from nothing.
So over any span of ``duration_ms`` at most ``2 * limit`` uses pass, the fixed window's
known edge, and ``reset_at`` is the window's end.

**All or nothing.** A verify's spend is one transaction: every rate limit it checks
(in one order: by bucket) and then the credits of the key and of its identity. One
refusal rolls back everything the transaction did, so a refused verify spends nothing
anywhere. Each count is one conditional statement (``... WHERE used + cost <= limit``,
``... WHERE remaining >= cost``): never negative, never spent twice, on any number of
workers and instances. SQLite takes its write lock at ``BEGIN``; PostgreSQL locks each
row it changes until the commit.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

import db.audit
import db.authority
import db.session
from db.authority import Authority
from db.errors import Conflict, NotFound
from db.lookups import Found, Refilling
from db.models import (
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


def credits_of(row: Credited, now: datetime) -> Credits | None:
    """What ``row`` holds now: a refill that is due shows, though not yet written."""
    if row.credits_remaining is None:
        return None
    refill = None
    remaining = row.credits_remaining
    if row.refill_interval is not None and row.refill_amount is not None:
        refill = Refill(row.refill_interval, row.refill_amount, row.refill_day)
        if row.refilled_at is None or row.refilled_at < refill.last_moment(now):
            remaining = row.refill_amount
    return Credits(remaining, refill)


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

    def count(
        self, session: Session | None, windows: Sequence[Window], now_ms: int
    ) -> list[Counted]: ...

    def peek(
        self, session: Session | None, windows: Sequence[Window], now_ms: int
    ) -> list[Counted]: ...

    def ping(self) -> None:
        """Raise ``db.errors.Unavailable`` unless the windows can be counted now."""

    def close(self) -> None: ...


class DatabaseWindows:
    """Windows as rows, one conditional UPSERT each, in the spending transaction; a
    refusal rolls the transaction back, so the windows counted before it count nothing."""

    in_database = True

    def ping(self) -> None:
        pass  # rows in the database: readiness checks the database itself

    def close(self) -> None:
        pass  # rows in the database: nothing of their own to close

    def count(
        self, session: Session | None, windows: Sequence[Window], now_ms: int
    ) -> list[Counted]:
        assert session is not None
        counted: list[Counted] = []
        for window in sorted(windows, key=lambda w: w.bucket):  # one lock order for all
            used = _count(session, window, now_ms)
            if used is None:
                # The transaction is undone: none of these count, this one not even once.
                undone = [Counted(c.window, c.used - c.window.cost, False) for c in counted]
                rest = [w for w in windows if w not in {c.window for c in counted}]
                return undone + self.peek(session, rest, now_ms)
            counted.append(Counted(window, used, False))
        return counted

    def peek(
        self, session: Session | None, windows: Sequence[Window], now_ms: int
    ) -> list[Counted]:
        assert session is not None
        table = RateLimitWindow.__table__.c
        found = []
        for window in windows:
            used = session.scalar(
                select(table.used).where(
                    table.bucket == window.bucket, table.window_start_ms == window.start_ms(now_ms)
                )
            )
            used = int(used or 0)
            found.append(Counted(window, used, not window.fits(used)))
        return found


@dataclass(frozen=True)
class Payer:
    """A row whose credits a verify spends (a key, its identity) and how they refill."""

    table: type[ApiKey] | type[Identity]
    row_id: int
    refill: Refill | None


@dataclass
class Outcome:
    """What a spend found: each window's uses, each payer's remaining credits."""

    refused: str | None = None  # RATE_LIMITED or USAGE_EXCEEDED
    windows: list[Counted] = field(default_factory=list)
    credits: dict[str, int | None] = field(default_factory=dict)  # by payer: key, identity


def spend(
    session: Session | None,
    counter: Windows,
    windows: Sequence[Window],
    payers: dict[str, Payer],
    cost: int,
    now: datetime,
) -> Outcome:
    """Spend ``cost`` credits from each payer (the key's row, then its identity's) and
    count ``windows``, all or nothing; a window that is full answers RATE_LIMITED,
    before credits that are out (USAGE_EXCEEDED).

    The caller's transaction is rolled back when the outcome is a refusal. Without
    payers and with windows outside the database, ``session`` may be None.
    """
    now_ms = int(now.timestamp() * 1000)
    outcome = Outcome()
    paid = []
    for name, payer in payers.items():
        assert session is not None
        left = _pay(session, payer, cost, now)
        if left is None:
            outcome.refused = USAGE_EXCEEDED
            outcome.credits[name] = _remaining(session, payer, now)
        else:
            outcome.credits[name] = left
            paid.append(name)
    if outcome.refused is None:
        outcome.windows = counter.count(session, windows, now_ms)
    else:
        outcome.windows = counter.peek(session, windows, now_ms)
    if any(counted.exceeded for counted in outcome.windows):
        outcome.refused = RATE_LIMITED
    if outcome.refused is not None:
        for name in paid:  # undone with the transaction
            outcome.credits[name] = (outcome.credits[name] or 0) + cost
    return outcome


def _count(session: Session, window: Window, now_ms: int) -> int | None:
    """Add ``cost`` uses to the window unless that passes the limit: uses after, or None."""
    start = window.start_ms(now_ms)
    table = RateLimitWindow.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    if not window.fits(0):
        return None
    statement = (
        dialect.insert(table)
        .values(
            bucket=window.bucket,
            window_start_ms=start,
            used=window.cost,
            ends_at_ms=start + window.duration_ms,
        )
        .on_conflict_do_update(
            index_elements=[table.c.bucket, table.c.window_start_ms],
            set_={"used": table.c.used + window.cost},
            where=table.c.used + max(window.cost, 1) <= window.limit,
        )
        .returning(table.c.used)
    )
    used = session.scalar(statement)
    return None if used is None else int(used)


def _pay(session: Session, payer: Payer, cost: int, now: datetime) -> int | None:
    """Spend ``cost`` of the payer's credits, a due refill first: what is left, or None
    if they cannot pay (nothing spent)."""
    table = payer.table
    current: Any
    if payer.refill is not None:
        moment = payer.refill.last_moment(now)
        due = and_(
            table.refill_interval.is_not(None),
            or_(table.refilled_at.is_(None), table.refilled_at < moment),
        )
        current = case((due, table.refill_amount), else_=table.credits_remaining)
        values: dict[str, Any] = {
            "credits_remaining": current - cost,
            "refilled_at": case((due, moment), else_=table.refilled_at),
        }
    else:
        current = table.credits_remaining
        values = {"credits_remaining": current - cost}
    left = session.scalar(
        update(table)
        # A cost of 0 checks that a credit is left, spending none.
        .where(
            table.id == payer.row_id,
            table.credits_remaining.is_not(None),
            current >= max(cost, 1),
        )
        .values(**values)
        .returning(table.credits_remaining)
    )
    return None if left is None else int(left)


def _remaining(session: Session, payer: Payer, now: datetime) -> int | None:
    row = session.get(payer.table, payer.row_id)
    held = credits_of(row, now) if isinstance(row, Credited) else None
    return None if held is None else held.remaining


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
    current = credits_of(row, now)
    if current is None and op != "set":
        raise Conflict(f"This key has unlimited use: {op} needs credits (set them first)")
    current = current or Credits(0, None)
    remaining = {"set": value, "increment": current.remaining + value}.get(
        op, current.remaining - value
    )
    if not 0 <= remaining <= MAX_CREDITS:
        # The value is valid; the balance it meets is what refuses it.
        raise Conflict(f"Credits would be {remaining}: they stay between 0 and {MAX_CREDITS}")
    if current.refill is not None and current.remaining != row.credits_remaining:
        row.refilled_at = current.refill.last_moment(now)
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


class _Refusal(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


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
        payers["key"] = Payer(ApiKey, found.key_id, _refill(found.credits))
    if found.identity_credits is not None and found.identity_id is not None:
        payers["identity"] = Payer(Identity, found.identity_id, _refill(found.identity_credits))
    return list(windows.values()), payers


def _refill(held: Refilling) -> Refill | None:
    if held.interval is None or held.amount is None:
        return None
    return Refill(RefillInterval(held.interval), held.amount, held.day)


def spend_apart(
    counter: Windows, windows: Sequence[Window], payers: dict[str, Payer], cost: int, now: datetime
) -> Outcome:
    """``spend`` in a transaction of its own: committed if it all passed, else undone.
    Windows counted outside the database with no credits to spend need no transaction."""
    if not payers and not counter.in_database:
        return spend(None, counter, windows, payers, cost, now)
    try:
        with db.session.apart(writes=True) as session:
            outcome = spend(session, counter, windows, payers, cost, now)
            if outcome.refused is not None:
                raise _Refusal(outcome)
            return outcome
    except _Refusal as refusal:
        return refusal.outcome


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
    try:
        with db.session.apart(writes=True) as session:
            db.authority.claim(session, authority)
            db.authority.confirm(session)
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
            outcome = spend(session, counter, [window], {}, asked.cost, now)
            if outcome.refused is not None:
                raise _Refusal(outcome)
            return outcome
    except _Refusal as refusal:
        return refusal.outcome


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
