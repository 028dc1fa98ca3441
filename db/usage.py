"""``last_used_at``, recorded off the request path.

A verify only notes, in its worker's memory, that a key was used; a background
flusher writes the notes in one batch every few seconds and once more at shutdown
(Kong's rate-limiting plugin syncs its counters the same way). A verify therefore
never writes, never waits for a write lock, and cannot fail because of one. A key
verified many times in a period costs one UPDATE per worker, not one per verify.
"""

from __future__ import annotations

import threading
from datetime import datetime

from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session

from db.models import ApiKey


class LastUsed:
    """One worker's notes of which key was last used when, since the last flush."""

    def __init__(self) -> None:
        self._notes: dict[int, datetime] = {}
        self._lock = threading.Lock()

    def note(self, key_id: int, when: datetime) -> None:
        with self._lock:
            if key_id not in self._notes or self._notes[key_id] < when:
                self._notes[key_id] = when

    def take(self) -> dict[int, datetime]:
        with self._lock:
            notes, self._notes = self._notes, {}
        return notes

    def give_back(self, notes: dict[int, datetime]) -> None:
        """Notes a failed flush could not write: kept for the next one."""
        for key_id, when in notes.items():
            self.note(key_id, when)

    def __len__(self) -> int:
        return len(self._notes)


def write(session: Session, notes: dict[int, datetime]) -> None:
    """One batched UPDATE; a time never moves back (another worker may have written later)."""
    if not notes:
        return
    statement = (
        update(ApiKey)
        .where(
            ApiKey.id == bindparam("key_id"),
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("used_at")),
        )
        .values(last_used_at=bindparam("used_at"))
    )
    rows = [{"key_id": key_id, "used_at": when} for key_id, when in sorted(notes.items())]
    session.connection().execute(statement, rows)
