"""Keyplane's benchmark data: one account, its admin, its API's verifier key, and N
keys, written in bulk.

Keys are made and stored exactly as ``db.api_keys.issue`` makes them (a random key,
its HMAC under the server secret, its permission links), without an audit event
each: a million audited creates would take the benchmark's whole time budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from keyplane import db
from keyplane.db import crypto
from keyplane.db.engine import for_writing, make_engine
from keyplane.db.models import ApiKey, ApiKeyPermission, RateLimit
from keyplane.db.permissions import VERIFY

BATCH = 10_000
HELD = "readApplications"
OTHER = "writeApplications"
SPREAD = 1_000  # keys a spread load cycles through
# A limited key: credits that last the whole run, and one auto-applied rate limit
# that it never reaches (each verify spends both; none is refused).
LIMITED_CREDITS = 2**53 - 1
LIMITED_RATE = {"name": "requests", "limit": 10**9, "duration_ms": 60_000, "auto_apply": True}


@dataclass(frozen=True)
class Seeded:
    valid: str  # holds HELD
    lacking: str  # holds OTHER only
    key_id: int  # the key the PATCH benchmark changes
    token: str  # the admin's, for the management operations
    spread: list[str]  # SPREAD keys holding HELD, without limits
    limited: list[str]  # SPREAD keys holding HELD, with credits and LIMITED_RATE
    verifier: str = ""  # a key holding keyplane.verify: what the account's API verifies with


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
            admin = db.api_keys.Caller(
                db.api_keys.Scope(account_id), db.audit.Actor.user(user_id), user_id, True
            )
            new = db.api_keys.NewKey("the API's verifier", None, (VERIFY,))
            _, verifier = db.api_keys.issue(session, secrets, admin, new, now)
        valid, lacking = keys // 3, keys // 2
        spread = range(min(SPREAD, keys))
        kept: dict[int, tuple[int, str]] = {}  # index -> (id, key), for the chosen ones
        for start in range(0, keys, BATCH):
            batch = [(i, crypto.generate_api_key()) for i in range(start, min(start + BATCH, keys))]
            with Session(for_writing(engine)) as session, session.begin():
                ids = _insert(session, secrets, account_id, user_id, batch, now, lacking)
            kept |= {
                i: (key_id, key)
                for key_id, (i, key) in zip(ids, batch, strict=True)
                if i in (valid, lacking) or i in spread
            }
        limited = [(i, crypto.generate_api_key()) for i in range(SPREAD)]
        with Session(for_writing(engine)) as session, session.begin():
            ids = _insert(session, secrets, account_id, user_id, limited, now, lacking=-1)
            session.execute(
                update(ApiKey).where(ApiKey.id.in_(ids)).values(credits_remaining=LIMITED_CREDITS)
            )
            session.execute(
                insert(RateLimit),
                [{"account_id": account_id, "key_id": key_id, **LIMITED_RATE} for key_id in ids],
            )
        token = secrets.issue_user_token(user_id, timedelta(days=1))
        return Seeded(
            kept[valid][1],
            kept[lacking][1],
            key_id=kept[valid][0],
            token=token,
            spread=[kept[i][1] for i in spread],
            limited=[key for _, key in limited],
            verifier=verifier,
        )
    finally:
        engine.dispose()


def _insert(
    session: Session,
    secrets: crypto.Secrets,
    account_id: int,
    user_id: int,
    batch: list[tuple[int, str]],
    now: datetime,
    lacking: int,
) -> list[int]:
    """``batch``'s keys, each holding HELD (the one numbered ``lacking``: OTHER only)."""
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
    return list(ids)
