"""Logins: the per-username and per-address throttles, and the audit record of each attempt.

The throttle counts *attempts*, each one before its password is checked, in one
atomic statement: an upsert that adds one only while the count is below the limit
(or starts a new window once the old one has ended). However many attempts arrive
at once, on however many workers and instances, at most ``max_attempts`` per
window reach the password check; a successful login clears the count. Windows that
ended are purged as new attempts come in, so the table holds only live counts.

A sign-in is also refused once its client address has *failed* too often in the
window, whatever the usernames (guessing across many names). Failures are counted
after the password check, so attempts already in flight may pass that limit by their
number; a success does not clear it.

Usernames are never stored: the throttle and the audit trail see a keyed hash of
the name (``crypto.Secrets.login_subject``), because people type passwords into
username fields and unknown names are counted too.

Sign-in (``POST /v1/auth/token``) and a password change both count an attempt here
(``count_attempt``) and both end in a new token (``grant``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db import accounts, audit, crypto
from keyplane.db.errors import TooManyRequests
from keyplane.db.models import LoginThrottle, User, UTCDateTime


@dataclass(frozen=True)
class SignIn:
    """How long a user token lives, and how many password attempts a window allows, per
    username and per client address."""

    token_ttl: timedelta
    max_attempts: int
    window: timedelta
    max_attempts_per_address: int = 100


# The largest count the column holds: a limit that never refuses (failures are only
# counted at the address; ``count_attempt`` refuses).
NEVER_REFUSED = 2**31 - 1
FROM_THIS_ADDRESS = "Too many failed logins from this address; try again later"


def count_attempt(
    sign_in: SignIn, subject: str, refusal: str, now: datetime, address: str | None = None
) -> None:
    """One password attempt for ``subject``, counted in its own committed transaction
    before the password is checked; past the limit, 429 with ``refusal``. A sign-in from
    a client ``address`` (``crypto.Secrets.login_address``) is refused first if that
    address has failed too often (``failed`` counts its failures)."""
    with db.session.apart(writes=True) as session:
        wait = _address_wait(session, sign_in, address, now) if address is not None else None
        if wait is not None:
            refusal = FROM_THIS_ADDRESS
        else:
            wait = admit(
                session, subject, now=now, max_attempts=sign_in.max_attempts, window=sign_in.window
            )
    if wait is not None:
        raise TooManyRequests(refusal, retry_after_seconds=wait)


def _address_wait(session: Session, sign_in: SignIn, address: str, now: datetime) -> int | None:
    """Seconds the address must wait, if its failures in the window reached the limit."""
    row = session.execute(
        select(LoginThrottle.window_started_at, LoginThrottle.attempts).where(
            LoginThrottle.subject == address
        )
    ).one_or_none()
    if row is None or row.window_started_at <= now - sign_in.window:
        return None
    if row.attempts < sign_in.max_attempts_per_address:
        return None
    started: datetime = row.window_started_at
    wait = started + sign_in.window - now
    return max(1, math.ceil(wait.total_seconds()))


def grant(
    sign_in: SignIn, secrets: crypto.Secrets, user_id: int, generation: int, now: datetime
) -> dict[str, Any]:
    """A new user token, as the token endpoint answers it (RFC 6749 §5.1)."""
    ttl = sign_in.token_ttl
    access_token = secrets.issue_user_token(user_id, ttl, now, generation)
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": int(ttl.total_seconds()),
    }


def admit(
    session: Session, subject: str, *, now: datetime, max_attempts: int, window: timedelta
) -> int | None:
    """Count one attempt for ``subject``: None if it may go on, else seconds to wait."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.window_started_at <= now - window))
    throttle = LoginThrottle.__table__.c
    ended = throttle.window_started_at <= now - window
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    counted = session.scalar(
        dialect.insert(LoginThrottle)
        .values(subject=subject, window_started_at=now, attempts=1)
        .on_conflict_do_update(
            index_elements=[LoginThrottle.subject],
            set_={
                "attempts": case((ended, 1), else_=throttle.attempts + 1),
                "window_started_at": case(
                    (ended, literal(now, UTCDateTime())), else_=throttle.window_started_at
                ),
            },
            where=or_(ended, throttle.attempts < max_attempts),
        )
        .returning(LoginThrottle.attempts)
    )
    if counted is not None:
        return None
    started = session.scalar(
        select(LoginThrottle.window_started_at).where(LoginThrottle.subject == subject)
    )
    wait = (started or now) + window - now
    return max(1, math.ceil(wait.total_seconds()))


def succeeded(session: Session, subject: str, user: User, now: datetime) -> None:
    """A successful login clears the username's count (never its address's: a sign-in
    to an account of one's own must not buy more guesses at others)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.subject == subject))
    _audit(session, "login.succeeded", audit.Actor.user(user.id), user, subject, now)


def failed(
    session: Session,
    subject: str,
    user: User | None,
    now: datetime,
    address: tuple[SignIn, str] | None = None,
) -> None:
    """Whoever failed is not known: the actor is anonymous, the user is the target. A
    failed sign-in counts against the client's address too (``address``: the limits
    and the address's keyed hash)."""
    if address is not None:
        sign_in, subject_of_address = address
        admit(
            session,
            subject_of_address,
            now=now,
            max_attempts=NEVER_REFUSED,  # counted only: count_attempt refuses
            window=sign_in.window,
        )
    _audit(session, "login.failed", audit.ANONYMOUS, user, subject, now)


def _audit(
    session: Session,
    action: str,
    actor: audit.Actor,
    user: User | None,
    subject: str,
    now: datetime,
) -> None:
    """In each of the user's accounts (their admins see it); an unknown name in none."""
    memberships = accounts.memberships_of(session, user.id) if user is not None else []
    account_ids: list[int | None] = [account.id for account, _ in memberships]
    for account_id in account_ids or [None]:
        # An unknown name is told only as a short keyed hash, so that repeated attempts
        # on one name can be told apart from a spray over many.
        changes = None if user is not None else {"username_hash": subject[:16]}
        target = ("user", user.id if user is not None else None)
        audit.record(session, account_id, actor, action, target, now, changes)
