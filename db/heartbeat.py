"""The readiness check's write: proof that the database takes writes (a full disk,
a read-only replica or a lost lock all fail it), not only that it answers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from keyplane.db.models import Heartbeat


def beat(session: Session, now: datetime) -> None:
    session.merge(Heartbeat(id=1, beat_at=now))
    session.flush()
