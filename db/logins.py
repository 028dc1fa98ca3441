"""Logins: the per-username throttle (counted in the database, so every worker sees
every failure) and the audit record of each attempt."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db import accounts, audit
from db.models import LoginFailure


def retry_after(
    session: Session, username: str, *, now: datetime, max_failures: int, window: timedelta
) -> int | None:
    """Seconds until this username may try again, or None if it may now.

    The same for known and unknown usernames: only the name is looked at.
    """
    failures = list(
        session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.username == username, LoginFailure.failed_at > now - window)
            .order_by(LoginFailure.failed_at)
        )
    )
    if len(failures) < max_failures:
        return None
    wait = failures[-max_failures] + window - now
    return max(1, math.ceil(wait.total_seconds()))


def failed(session: Session, username: str, user_id: int | None, now: datetime) -> None:
    session.add(LoginFailure(username=username, failed_at=now))
    session.flush()
    _audit(session, "login.failed", username, user_id, now)


def succeeded(session: Session, username: str, user_id: int, now: datetime) -> None:
    """A successful login clears the username's record of failures."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
    _audit(session, "login.succeeded", username, user_id, now)


def _audit(
    session: Session, action: str, username: str, user_id: int | None, now: datetime
) -> None:
    """In each of the user's accounts (their admins see it); an unknown name in none."""
    memberships = accounts.memberships_of(session, user_id) if user_id is not None else []
    account_ids: list[int | None] = [account.id for account, _ in memberships]
    for account_id in account_ids or [None]:
        audit.record(
            session,
            account_id=account_id,
            actor=audit.Actor.user(user_id) if user_id is not None else audit.ANONYMOUS,
            action=action,
            target=("user", user_id if user_id is not None else username),
            now=now,
        )
