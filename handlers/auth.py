"""``/v1/auth/token``: the OAuth2 password grant (RFC 6749 §4.3), throttled per username."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import db.accounts
import db.audit
import db.logins
import db.session
import db.users
from keyplane import crypto, runtime
from keyplane.errors import OAuthError, TooManyRequests

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    if body["grant_type"] != "password":
        raise OAuthError("unsupported_grant_type", "Only the password grant is supported")
    session, current = db.session.current(), runtime.current()
    settings, now = current.settings, current.now()
    username = body["username"]
    window = timedelta(seconds=settings.login_window_seconds)
    # The same for known and unknown usernames, and checked before any password work.
    failures = db.logins.failures_since(session, username, now - window)
    if len(failures) >= settings.login_max_failures:
        wait = failures[-settings.login_max_failures] + window - now
        raise TooManyRequests(
            "Too many failed logins for this username; try again later",
            retry_after_seconds=max(1, math.ceil(wait.total_seconds())),
        )
    user = db.users.by_username(session, username)
    # verify_password does the same work for an unknown user as for a known one.
    valid = crypto.verify_password(user.password_hash if user else None, body["password"])
    if user is None or not valid or not user.is_active:
        db.logins.record_failure(session, username, now)
        _audit_login(user.id if user else None, "login.failed", username, now)
        db.session.keep_writes_on_refusal()
        raise OAuthError("invalid_grant", "Incorrect username or password")
    db.logins.forget(session, username)
    _audit_login(user.id, "login.succeeded", username, now)
    ttl = settings.token_ttl_seconds
    access_token = current.secrets.issue_user_token(user.id, timedelta(seconds=ttl), now)
    return {"access_token": access_token, "token_type": "bearer", "expires_in": ttl}, 200, NO_STORE


def _audit_login(user_id: int | None, action: str, username: str, now: datetime) -> None:
    """In each of the user's accounts (their admins see it); an unknown name in none."""
    session = db.session.current()
    accounts = db.accounts.memberships_of(session, user_id) if user_id is not None else []
    actor = db.audit.Actor.user(user_id) if user_id is not None else db.audit.ANONYMOUS
    account_ids: list[int | None] = [account.id for account, _ in accounts]
    for account_id in account_ids or [None]:
        db.audit.record(
            session,
            account_id=account_id,
            actor=actor,
            action=action,
            target=("user", user_id if user_id is not None else username),
            now=now,
        )
