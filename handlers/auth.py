"""``/v1/auth/token``: the OAuth2 password grant (RFC 6749 §4.3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import db.session
import db.users
from keyplane import crypto, runtime
from keyplane.errors import OAuthError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    if body["grant_type"] != "password":
        raise OAuthError("unsupported_grant_type", "Only the password grant is supported")
    user = db.users.by_username(db.session.current(), body["username"])
    # verify_password does the same work for an unknown user as for a known one.
    valid = crypto.verify_password(user.password_hash if user else None, body["password"])
    if user is None or not valid or not user.is_active:
        raise OAuthError("invalid_grant", "Incorrect username or password")
    current = runtime.current()
    ttl = current.settings.token_ttl_seconds
    access_token = current.secrets.issue_user_token(user.id, timedelta(seconds=ttl))
    return {"access_token": access_token, "token_type": "bearer", "expires_in": ttl}, 200, NO_STORE
