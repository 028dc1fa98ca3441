"""``/v1/auth/token``: the OAuth2 password grant (RFC 6749 §4.3), throttled per username.

Each step has its own short transaction, and none is open while the password is
checked: the attempt is counted first (so at most the limit of attempts ever reach
a password check, however many arrive at once), then the user is read, then the
outcome is recorded, whatever the answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import db.logins
import db.session
import db.users
from db.errors import OAuthError, TooManyRequests
from handlers._context import runtime

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    if body["grant_type"] != "password":
        raise OAuthError("unsupported_grant_type", "Only the password grant is supported")
    current = runtime()
    now, username = current.now(), body["username"]
    subject = current.secrets.login_subject(username)
    count_attempt(subject, "Too many failed logins for this username; try again later")
    with db.session.apart(writes=False) as session:
        user = db.users.by_username(session, username)
    # The same work for an unknown user as for a known one, a few at a time per worker.
    valid = current.passwords.verify(user.password_hash if user else None, body["password"])
    accepted = user is not None and valid and user.is_active
    with db.session.apart(writes=True) as session:
        if user is not None and accepted:
            db.logins.succeeded(session, subject, user, now)
        else:
            db.logins.failed(session, subject, user, now)
    if user is None or not accepted:
        raise OAuthError("invalid_grant", "Incorrect username or password")
    return grant(user.id, user.token_generation), 200, NO_STORE


def count_attempt(subject: str, refusal: str) -> None:
    """One password attempt for ``subject``, counted in its own committed transaction
    before the password is checked; past the limit, 429 with ``refusal``."""
    current = runtime()
    settings = current.settings
    with db.session.apart(writes=True) as session:
        wait = db.logins.admit(
            session,
            subject,
            now=current.now(),
            max_attempts=settings.login_max_failures,
            window=timedelta(seconds=settings.login_window_seconds),
        )
    if wait is not None:
        raise TooManyRequests(refusal, retry_after_seconds=wait)


def grant(user_id: int, generation: int) -> dict[str, Any]:
    """A new user token, as the token endpoint answers it."""
    current = runtime()
    ttl = current.settings.token_ttl_seconds
    access_token = current.secrets.issue_user_token(
        user_id, timedelta(seconds=ttl), current.now(), generation
    )
    return {"access_token": access_token, "token_type": "bearer", "expires_in": ttl}
