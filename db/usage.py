"""What using a key changes, recorded off the request path.

A verify (or a key used as a credential) only notes, in its worker's memory, that a
key was used, and, when its digest was made with a previous server secret, that the
digest should be renewed with the current one. Each verify's outcome is counted there
too, per account, hour, key, ``external_id``, code and tag (``UsageCount``). A
background flusher writes the notes in one batch every few seconds and once more at
shutdown (Kong's rate-limiting plugin syncs its counters the same way). A verify
therefore never writes, never waits for a write lock, and cannot fail because of
one; a key verified many times in a period costs one UPDATE per worker, not one per
verify, and its counts one upsert per row of the batch.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db.lookups import Found
from keyplane.db.models import ApiKey, UsageCount

# (account id, hour since the epoch, key id or 0, external_id or "", code, tag or "")
CountedAs = tuple[int, int, int, str, str, str]
NO_KEY, NO_TAG = 0, ""
TOLD_REMEMBERED = 10_000


def hour_of(when: datetime) -> int:
    return int(when.timestamp()) // 3600


@dataclass(frozen=True)
class Exceeded:
    """A key's first refusal in a window (``usage.exceeded``)."""

    account_id: int
    code: str
    at: datetime
    detail: dict[str, Any]


@dataclass
class Notes:
    used: dict[int, datetime] = field(default_factory=dict)
    # (key id, column) -> (stale digest, fresh digest)
    renewals: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)
    counts: Counter[CountedAs] = field(default_factory=Counter)
    # (key id, window) -> (account id, code, when first refused, what refused it)
    exceeded: dict[tuple[int, str], Exceeded] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.used or self.renewals or self.counts or self.exceeded)


class Usage:
    """One worker's notes since its last flush."""

    def __init__(self, resolution: timedelta) -> None:
        self.resolution = resolution
        self._notes = Notes()
        self._lock = threading.Lock()
        self._told: set[tuple[int, str]] = set()  # windows this worker has noted

    def note(self, found: Found, fresh_digest: str, now: datetime) -> None:
        """``found`` was used now; ``fresh_digest`` is its secret's current digest."""
        stale_use = found.last_used_at is None or now - found.last_used_at >= self.resolution
        with self._lock:
            if stale_use:
                self._notes.used[found.key_id] = now
            if found.stale_digest is not None:
                column, digest = found.stale_digest
                self._notes.renewals[found.key_id, column] = (digest, fresh_digest)

    def count(
        self,
        account_id: int,
        found: Found | None,
        code: str,
        tags: Sequence[str],
        now: datetime,
    ) -> None:
        """One verify's outcome: in the total (tag "") and under each of its tags."""
        key_id, external_id = (NO_KEY, "") if found is None else (found.key_id, found.external_id)
        row = (account_id, hour_of(now), key_id, external_id or "", code)
        with self._lock:
            counts = self._notes.counts
            counts[(*row, NO_TAG)] += 1
            for tag in set(tags):
                counts[(*row, tag)] += 1

    def exceeded(
        self, found: Found, code: str, window: str, detail: dict[str, Any], now: datetime
    ) -> None:
        """``found`` was refused (RATE_LIMITED, USAGE_EXCEEDED) in ``window``: told to the
        account's webhooks once per key and window (``write``), however many refusals
        and workers saw it."""
        seen = (found.key_id, window)
        with self._lock:
            if seen in self._told:
                return
            if len(self._told) >= TOLD_REMEMBERED:
                self._told.clear()  # the outbox's dedupe still tells each window once
            self._told.add(seen)
            self._notes.exceeded[seen] = Exceeded(found.account_id, code, now, detail)

    def take(self) -> Notes:
        with self._lock:
            notes, self._notes = self._notes, Notes()
        return notes

    def give_back(self, notes: Notes) -> None:
        """Notes a failed flush could not write: kept for the next one."""
        with self._lock:
            for key_id, when in notes.used.items():
                if self._notes.used.get(key_id, when) <= when:
                    self._notes.used[key_id] = when
            for renewal, digests in notes.renewals.items():
                self._notes.renewals.setdefault(renewal, digests)
            self._notes.counts.update(notes.counts)
            for seen, exceeded in notes.exceeded.items():
                self._notes.exceeded.setdefault(seen, exceeded)


def write(session: Session, notes: Notes) -> None:
    """Batched UPDATEs, in key order; nothing moves back or overwrites a newer change."""
    if notes.used:
        statement = (
            update(ApiKey)
            .where(
                ApiKey.id == bindparam("key_id"),
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("used_at")),
            )
            .values(last_used_at=bindparam("used_at"))
        )
        rows = [{"key_id": key, "used_at": when} for key, when in sorted(notes.used.items())]
        session.connection().execute(statement, rows)
    for (key_id, column), (stale, fresh) in sorted(notes.renewals.items()):
        digest = getattr(ApiKey, column)
        session.execute(
            update(ApiKey).where(ApiKey.id == key_id, digest == stale).values({column: fresh})
        )
    if notes.counts:
        _add_counts(session, notes.counts)
    for (key_id, window), exceeded in sorted(notes.exceeded.items()):
        # Locked and read afresh: the event shows the key as it is when the event
        # takes its place among the key's others (in commit order).
        key = session.get(ApiKey, key_id, with_for_update=True, populate_existing=True)
        if key is not None:
            db.api_keys.tell(
                session,
                key,
                "usage.exceeded",
                exceeded.at,
                dedupe=f"usage.exceeded:{key_id}:{_short(window)}",
                code=exceeded.code,
                **exceeded.detail,
            )


_COUNTED = ("account_id", "hour", "key_id", "external_id", "code", "tag")


def _add_counts(session: Session, counts: Counter[CountedAs]) -> None:
    """One upsert for the batch, in key order: each row's count added to what is there."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    table = UsageCount.__table__
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=list(_COUNTED),
        set_={"count": table.c.count + statement.excluded.count},
    )
    rows = [
        dict(zip(_COUNTED, row, strict=True)) | {"count": n} for row, n in sorted(counts.items())
    ]
    session.connection().execute(statement, rows)


def forget_before(session: Session, now: datetime, retention: timedelta) -> None:
    """Counts older than the retention, dropped (the flusher's purge, once a minute)."""
    session.execute(delete(UsageCount).where(UsageCount.hour < hour_of(now - retention)))


# -- reading the counts back (GET /v1/usage, ``keyplane usage``) -----------------------

HOUR_SECONDS = 3600
GRANULARITY_HOURS = {"hour": 1, "day": 24}
DIMENSIONS = ("key_id", "external_id", "code", "tag")
MAX_SPAN = {"hour": timedelta(days=31), "day": timedelta(days=400)}
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}


def before(moment: datetime, span: timedelta) -> datetime:
    """``moment - span``, or the earliest time there is."""
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def end_of_bucket(now: datetime, granularity: str) -> datetime:
    """When the bucket ``now`` falls in ends: the default end of a question."""
    seconds = HOUR_SECONDS * GRANULARITY_HOURS[granularity]
    return datetime.fromtimestamp((int(now.timestamp()) // seconds + 1) * seconds, UTC)


@dataclass(frozen=True)
class Question:
    """What to count: buckets of ``granularity`` from the one ``start`` falls in up to
    the last that begins before ``end``; grouped by ``group_by`` (of ``DIMENSIONS``);
    only rows matching the filters; only keys of ``owner_id`` (a member) if given."""

    start: datetime
    end: datetime
    granularity: str = "hour"
    group_by: tuple[str, ...] = ("code",)
    key_id: int | None = None
    external_id: str | None = None
    tag: str | None = None
    owner_id: int | None = None
    limit: int = 1000


@dataclass(frozen=True)
class Bucket:
    time: datetime
    key_id: int | None
    external_id: str | None
    code: str | None
    tag: str | None
    count: int


def report(session: Session, account_id: int, question: Question) -> tuple[list[Bucket], bool]:
    """The counted buckets, oldest first, and whether there were more than ``limit``
    (none when ``start`` is not before ``end``)."""
    q = question
    if q.start >= q.end:
        return [], False
    unit = GRANULARITY_HOURS[q.granularity]
    first = hour_of(q.start) // unit * unit
    after = -(-int(q.end.timestamp()) // (HOUR_SECONDS * unit)) * unit  # buckets before end
    counts = UsageCount.__table__.c
    bucket = (counts.hour // unit).label("bucket")
    grouped = [getattr(counts, d) for d in q.group_by]
    by_tag = "tag" in q.group_by or q.tag is not None
    query = (
        select(bucket, *grouped, func.sum(counts.count))
        .where(
            counts.account_id == account_id,
            counts.hour >= first,
            counts.hour < after,
            counts.tag != NO_TAG if by_tag else counts.tag == NO_TAG,
        )
        .group_by(bucket, *grouped)
        .order_by(bucket, *grouped)
        .limit(q.limit + 1)
    )
    if q.key_id is not None:
        query = query.where(counts.key_id == q.key_id)
    if q.external_id is not None:
        query = query.where(counts.external_id == q.external_id)
    if q.tag is not None:
        query = query.where(counts.tag == q.tag)
    if q.owner_id is not None:
        owned = select(ApiKey.id).where(
            ApiKey.account_id == account_id, ApiKey.user_id == q.owner_id
        )
        query = query.where(counts.key_id.in_(owned))
    rows = session.execute(query).all()
    found = []
    for row in rows[: q.limit]:
        values = dict(zip(q.group_by, row[1:-1], strict=True))
        found.append(
            Bucket(
                time=datetime.fromtimestamp(row[0] * unit * HOUR_SECONDS, UTC),
                key_id=values.get("key_id") or None,
                external_id=values.get("external_id") or None,
                code=values.get("code"),
                tag=values.get("tag"),
                count=int(row[-1]),
            )
        )
    return found, len(rows) > q.limit


def _short(window: str) -> str:
    """A window's name within the outbox's dedupe column, however long its limit's name."""
    return hashlib.sha256(window.encode()).hexdigest()[:32]
