"""Storage: typed SQLAlchemy 2 models and every query Keyplane makes, one module per resource.

Callers write ``from keyplane import db`` and then ``db.api_keys.page(db.session.current(), ...)``:
the modules read by their resource's name are loaded here, so that namespace is always whole.
"""

from keyplane.db import (
    access,
    accounts,
    api_keys,
    audit,
    authority,
    backup,
    engine,
    heartbeat,
    identities,
    leaks,
    limits,
    logins,
    migrate,
    pages,
    permissions,
    policies,
    session,
    usage,
    users,
    webhooks,
)

__all__ = [
    "access",
    "accounts",
    "api_keys",
    "audit",
    "authority",
    "backup",
    "engine",
    "heartbeat",
    "identities",
    "leaks",
    "limits",
    "logins",
    "migrate",
    "pages",
    "permissions",
    "policies",
    "session",
    "usage",
    "users",
    "webhooks",
]
