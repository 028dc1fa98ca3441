"""Small factories for accounts, users and keys, written through ``db/`` itself."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from keyplane import db
from keyplane.db import crypto
from keyplane.db.engine import for_writing
from keyplane.db.models import Account, ApiKey, Membership, Role, User
from keyplane.db.permissions import VERIFY

PASSWORD = "correct-horse-battery-staple"
_names = itertools.count(1)


def _now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _password_hash() -> str:
    return crypto.hash_password(PASSWORD)  # argon2id is slow on purpose: hash once a run


@dataclass
class Factory:
    sessions: sessionmaker[Session]
    secrets: crypto.Secrets

    @classmethod
    def from_engine(cls, engine: Engine, secrets: crypto.Secrets) -> Factory:
        # Writes take SQLite's write lock at BEGIN, as the service's do: a transaction
        # that read first could fail to write once another writer committed meanwhile
        # (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
        return cls(sessionmaker(for_writing(engine), expire_on_commit=False), secrets)

    def account(self, name: str = "acme") -> Account:
        with self.sessions() as session, session.begin():
            return db.accounts.create(session, name)

    def user(
        self,
        account: Account | None = None,
        role: Role = Role.ADMIN,
        username: str | None = None,
        password: str = PASSWORD,
    ) -> User:
        password_hash = _password_hash() if password == PASSWORD else crypto.hash_password(password)
        with self.sessions() as session, session.begin():
            user = db.users.create(session, username or f"user{next(_names)}", password_hash)
            if account is not None:
                db.accounts.add_member(
                    session, account.id, user.id, role, actor=db.audit.OPERATOR, now=_now()
                )
            return user

    def join(self, user: User, account: Account, role: Role = Role.MEMBER) -> None:
        with self.sessions() as session, session.begin():
            db.accounts.add_member(
                session, account.id, user.id, role, actor=db.audit.OPERATOR, now=_now()
            )

    def set_active(self, user: User, active: bool) -> None:
        """The operator's switch (``keyplane users deactivate`` / ``activate``)."""
        with self.sessions() as session, session.begin():
            stored = session.get(User, user.id)
            assert stored is not None
            db.accounts.set_user_active(session, stored, active, now=_now())

    def token(self, user: User) -> str:
        """A token of the user's first generation (before any password change)."""
        return self.secrets.issue_user_token(user.id, timedelta(hours=1))

    def fresh_auth(self, user: User) -> dict[str, str]:
        """A token as signing in now would give: of the user's current generation."""
        with self.sessions() as session:
            generation = session.scalar(select(User.token_generation).where(User.id == user.id))
        token = self.secrets.issue_user_token(user.id, timedelta(hours=1), generation=generation)
        return {"Authorization": f"Bearer {token}"}

    def auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def verifier(self, account: Account | int) -> dict[str, str]:
        """Headers that may verify the account's keys: a token of its first admin (one
        is made if it has none), which adds no key and no audit event of its own."""
        account_id = account if isinstance(account, int) else account.id
        with self.sessions() as session:
            admin = session.scalar(
                select(User)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.account_id == account_id, Membership.role == Role.ADMIN)
                .order_by(Membership.created_at)
                .limit(1)
            )
        if admin is None:
            stored = Account(id=account_id, name="")
            admin = self.user(stored, Role.ADMIN)
        return self.fresh_auth(admin) | {"x-account-id": str(account_id)}

    def verifier_key(self, user: User, account: Account) -> tuple[ApiKey, dict[str, str]]:
        """An API key of ``user`` (an admin) holding the right to verify, as headers."""
        key, full_key = self.api_key(user, account, permissions=(VERIFY,), by_admin=True)
        return key, {"Authorization": f"Bearer {full_key}"}

    def api_key(
        self,
        user: User,
        account: Account,
        *,
        description: str | None = "a key",
        expires_at: datetime | None = None,
        permissions: tuple[str, ...] = (),
        by_admin: bool = False,
    ) -> tuple[ApiKey, str]:
        with self.sessions() as session, session.begin():
            owner = db.api_keys.Caller(
                db.api_keys.Scope(account.id), db.audit.Actor.user(user.id), user.id, by_admin
            )
            new = db.api_keys.NewKey(description, expires_at, permissions)
            return db.api_keys.issue(session, self.secrets, owner, new, datetime.now(UTC))

    def identity(self, account: Account, external_id: str, **given: object) -> None:
        """A customer of ``account``, its fields as the API takes them."""
        with self.sessions() as session, session.begin():
            db.identities.put(
                session, account.id, external_id, given, actor=db.audit.OPERATOR, now=_now()
            )

    def webhook(self, account: Account, url: str = "https://hooks.example.com/k") -> int:
        """An endpoint of ``account`` for every event type: its id."""
        with self.sessions() as session, session.begin():
            webhook, _ = db.webhooks.register(
                session,
                self.secrets,
                account.id,
                {"url": url},
                allow_private=False,
                actor=db.audit.OPERATOR,
                now=_now(),
            )
            return webhook.id

    def stored_key(self, key_id: int) -> ApiKey | None:
        with self.sessions() as session:
            return session.scalar(select(ApiKey).where(ApiKey.id == key_id))

    def count_keys(self) -> int:
        with self.sessions() as session:
            return len(session.scalars(select(ApiKey.id)).all())
