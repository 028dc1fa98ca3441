"""Keyplane's benchmark data: one account, its admin, and N keys, written in bulk.

Keys are made and stored exactly as ``db.api_keys.issue`` makes them (a random key,
its HMAC under the server secret, its permission links), without an audit event
each: a million audited creates would take the benchmark's whole time budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.orm import Session

import db.accounts
import db.migrate
from db import crypto
from db.engine import for_writing, make_engine
from db.models import ApiKey, ApiKeyPermission

BATCH = 10_000
HELD = "readApplications"
OTHER = "writeApplications"


@dataclass(frozen=True)
class Seeded:
    valid: str  # holds HELD
    lacking: str  # holds OTHER only
    key_id: int  # the key the PATCH benchmark changes
    token: str  # the admin's, for the management operations


def seed(database_url: str, secret: str, keys: int, admin: str, password: str) -> Seeded:
    engine = make_engine(database_url)
    try:
        db.migrate.upgrade(engine)
        secrets = crypto.Secrets.derive(secret)
        now = datetime.now(UTC)
        with Session(for_writing(engine)) as session, session.begin():
            account, user = db.accounts.create_with_admin(
                session, "bench", admin, crypto.hash_password(password), now
            )
            account_id, user_id = account.id, user.id
        valid, lacking = keys // 3, keys // 2
        kept: dict[int, tuple[int, str]] = {}  # index -> (id, key), for the chosen two
        for start in range(0, keys, BATCH):
            batch = [(i, crypto.generate_api_key()) for i in range(start, min(start + BATCH, keys))]
            with Session(for_writing(engine)) as session, session.begin():
                ids = session.scalars(
                    insert(ApiKey).returning(ApiKey.id, sort_by_parameter_order=True),
                    [
                        {
                            "account_id": account_id,
                            "user_id": user_id,
                            "key_prefix": crypto.display_prefix(key),
                            "key_digest": secrets.api_key_digest(key),
                            "description": f"bench key {i}",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i, key in batch
                    ],
                ).all()
                session.execute(
                    insert(ApiKeyPermission),
                    [
                        {
                            "api_key_id": key_id,
                            "account_id": account_id,
                            "permission_id": OTHER if i == lacking else HELD,
                        }
                        for key_id, (i, _) in zip(ids, batch, strict=True)
                    ],
                )
            kept |= {
                i: (key_id, key)
                for key_id, (i, key) in zip(ids, batch, strict=True)
                if i in (valid, lacking)
            }
        token = secrets.issue_user_token(user_id, timedelta(days=1))
        return Seeded(kept[valid][1], kept[lacking][1], key_id=kept[valid][0], token=token)
    finally:
        engine.dispose()
