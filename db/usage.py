"""What using a key changes, recorded off the request path.

A verify (or a key used as a credential) only notes, in its worker's memory, that a
key was used, and, when its digest was made with a previous server secret, that the
digest should be renewed with the current one. A background flusher writes the
notes in one batch every few seconds and once more at shutdown (Kong's rate-limiting
plugin syncs its counters the same way). A verify therefore never writes, never
waits for a write lock, and cannot fail because of one; a key verified many times
in a period costs one UPDATE per worker, not one per verify.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session

from db.lookups import Found
from db.models import ApiKey


@dataclass
class Notes:
    used: dict[int, datetime] = field(default_factory=dict)
    # (key id, column) -> (stale digest, fresh digest)
    renewals: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.used or self.renewals)


class Usage:
    """One worker's notes since its last flush."""

    def __init__(self, resolution: timedelta) -> None:
        self.resolution = resolution
        self._notes = Notes()
        self._lock = threading.Lock()

    def note(self, found: Found, fresh_digest: str, now: datetime) -> None:
        """``found`` was used now; ``fresh_digest`` is its secret's current digest."""
        stale_use = found.last_used_at is None or now - found.last_used_at >= self.resolution
        with self._lock:
            if stale_use:
                self._notes.used[found.key_id] = now
            if found.stale_digest is not None:
                column, digest = found.stale_digest
                self._notes.renewals[found.key_id, column] = (digest, fresh_digest)

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
