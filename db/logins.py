"""Failed logins per username, for the throttle (kept in the database: every worker counts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import LoginFailure


def failures_since(session: Session, username: str, since: datetime) -> list[datetime]:
    """When this username failed since ``since``, oldest first."""
    return list(
        session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.username == username, LoginFailure.failed_at > since)
            .order_by(LoginFailure.failed_at)
        )
    )


def record_failure(session: Session, username: str, now: datetime) -> None:
    session.add(LoginFailure(username=username, failed_at=now))
    session.flush()


def forget(session: Session, username: str) -> None:
    """A successful login clears the username's record of failures."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
