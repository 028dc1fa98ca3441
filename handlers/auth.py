"""``/v1/auth/token``: the OAuth2 password grant (RFC 6749 §4.3), throttled per username
and per client address.

Each step has its own short transaction, and none is open while the password is
checked: the attempt is counted first (so at most the limit of attempts ever reach
a password check, however many arrive at once), then the user is read, then the
outcome is recorded, whatever the answer.
"""

from __future__ import annotations

from typing import Any

from keyplane import db
from keyplane.db.errors import OAuthError
from keyplane.handlers.context import NO_STORE, runtime


def token(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    if body["grant_type"] != "password":
        raise OAuthError("unsupported_grant_type", "Only the password grant is supported")
    current = runtime()
    now, username = current.now(), body["username"]
    subject = current.secrets.login_subject(username)
    client = db.audit.CLIENT_ADDRESS.get()  # the peer, or the client a trusted proxy names
    address = current.secrets.login_address(client) if client else None
    refusal = "Too many failed logins for this username; try again later"
    db.logins.count_attempt(current.sign_in, subject, refusal, now, address)
    with db.session.apart(writes=False) as session:
        user = db.users.by_username(session, username)
    # The same work for an unknown user as for a known one, a few at a time per worker.
    valid = current.passwords.verify(user.password_hash if user else None, body["password"])
    accepted = user is not None and valid and user.is_active
    with db.session.apart(writes=True) as session:
        if user is not None and accepted:
            db.logins.succeeded(session, subject, user, now)
        else:
            counted = (current.sign_in, address) if address is not None else None
            db.logins.failed(session, subject, user, now, counted)
    if user is None or not accepted:
        raise OAuthError("invalid_grant", "Incorrect username or password")
    answer = db.logins.grant(current.sign_in, current.secrets, user.id, user.token_generation, now)
    return answer, 200, NO_STORE
