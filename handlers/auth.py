"""``/v1/auth/token``: the OAuth2 password grant (RFC 6749 §4.3), throttled per username."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
    settings, now, username = current.settings, current.now(), body["username"]
    # Checked before any password work.
    wait = db.logins.retry_after(
        session,
        username,
        now=now,
        max_failures=settings.login_max_failures,
        window=timedelta(seconds=settings.login_window_seconds),
    )
    if wait is not None:
        raise TooManyRequests(
            "Too many failed logins for this username; try again later", retry_after_seconds=wait
        )
    user = db.users.by_username(session, username)
    # verify_password does the same work for an unknown user as for a known one.
    valid = crypto.verify_password(user.password_hash if user else None, body["password"])
    if user is None or not valid or not user.is_active:
        db.logins.failed(session, username, user.id if user else None, now)
        db.session.keep_writes_on_refusal()
        raise OAuthError("invalid_grant", "Incorrect username or password")
    db.logins.succeeded(session, username, user.id, now)
    ttl = settings.token_ttl_seconds
    access_token = current.secrets.issue_user_token(user.id, timedelta(seconds=ttl), now)
    return {"access_token": access_token, "token_type": "bearer", "expires_in": ttl}, 200, NO_STORE
