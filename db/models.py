"""Typed models. Timestamps are timezone-aware UTC on every database (see ``UTCDateTime``)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    false,
    not_,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC datetimes: SQLite would otherwise hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Ids are int64 as the spec says (PostgreSQL BIGINT); SQLite keeps INTEGER, the type
# its rowid primary keys autoincrement with (it is 64-bit there anyway).
BigId = BigInteger().with_variant(Integer, "sqlite")


def _text_enum(values: type[enum.StrEnum]) -> Enum:
    """An enum stored as its values' text (VARCHAR(20)), on every database alike."""
    return Enum(
        values, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]
    )


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, int: BigId}


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The account's key policy (GET/PUT /v1/account/policy, ``db.policies``).
    # The longest a key may live from its creation or last expiry change; None: no limit.
    max_key_lifetime_seconds: Mapped[int | None]
    expiry_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The catalog permissions members may grant their own keys; None: the whole catalog.
    member_permissions: Mapped[list[str] | None] = mapped_column(JSON)
    # What a leak report does to a key of the account: "revoke" (for good) or "disable".
    on_leak: Mapped[str] = mapped_column(String(20), default="revoke", server_default="revoke")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("uq_users_username_key", "username_key", unique=True),
        Index("uq_users_lookalike_key", "lookalike_key", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # The name to sign in with; ``db.usernames`` says how names are told apart.
    username: Mapped[str] = mapped_column(String(150), unique=True)
    username_key: Mapped[str] = mapped_column(String(150), server_default="")
    lookalike_key: Mapped[str] = mapped_column(String(150), server_default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # In every token; bumped when the password changes, so earlier tokens stop working.
    token_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Membership(Base):
    __tablename__ = "memberships"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(_text_enum(Role))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DISABLED = "disabled"  # switched off, or its owner left the account; reversible


class DisabledBy(enum.StrEnum):
    """Why a key is switched off, which says who may switch it on again.

    Only an admin turns on a key an admin switched off, or one switched off when its
    owner left the account or was deactivated; the owner may turn on what they
    switched off themselves.
    """

    OWNER = "owner"
    ADMIN = "admin"
    REMOVAL = "removal"
    DEACTIVATION = "deactivation"
    LEAK = "leak"  # a secret scanner reported it leaked (``db.leaks``)


class RefillInterval(enum.StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


class Credited:
    """Credits that a ``VALID`` verify spends (``db.limits``), on a key or an identity.

    ``credits_remaining`` None: no credits, nothing to spend. With a refill, the
    remaining credits are set to ``refill_amount`` at each refill moment (UTC midnight
    each day, or on ``refill_day`` of each month), computed when next spent or read:
    ``refilled_at`` is the refill moment last applied.
    """

    credits_remaining: Mapped[int | None] = mapped_column(BigInteger)
    refill_interval: Mapped[RefillInterval | None] = mapped_column(_text_enum(RefillInterval))
    refill_amount: Mapped[int | None] = mapped_column(BigInteger)
    refill_day: Mapped[int | None] = mapped_column(Integer)
    refilled_at: Mapped[datetime | None]


class ApiKey(Credited, Base):
    __tablename__ = "api_keys"
    # An account's keys, newest first (lists and their cursors), from the index alone.
    __table_args__ = (
        Index("ix_api_keys_account_id_id", "account_id", "id"),
        # Lists filtered by the customer's own id for the owner.
        Index("ix_api_keys_account_id_external_id", "account_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_prefix: Mapped[str] = mapped_column(String(32))
    # HMAC-SHA256 (hex) of the full key under the server secret; never the key itself.
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    # After a rotation with a grace period, the replaced secret's digest, until then.
    previous_key_digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_key_expires_at: Mapped[datetime | None]
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # The customer's own id for whoever holds the key, and their data: told by a VALID verify.
    external_id: Mapped[str | None] = mapped_column(String(255))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A reversible switch. Removing the owner from the account turns it off, for good
    # unless someone turns it on again.
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    disabled_by: Mapped[DisabledBy | None] = mapped_column(_text_enum(DisabledBy))
    # An admin set ``expires_at``: a member may then bring it forward, never later or off.
    expiry_set_by_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The ``expires_at`` a ``key.expiring`` event was sent for: one warning per expiry.
    expiry_warned_for: Mapped[datetime | None]
    ratelimit_rows: Mapped[list[RateLimit]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="RateLimit.name"
    )
    permission_links: Mapped[list[ApiKeyPermission]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="ApiKeyPermission.permission_id",
    )

    @property
    def permissions(self) -> list[str]:
        return sorted(link.permission_id for link in self.permission_links)

    @property
    def ratelimits(self) -> list[dict[str, Any]]:
        return [limit.to_api() for limit in self.ratelimit_rows]


class KeyState(Protocol):
    """What a key's status is judged from: a stored key, or one that verify read."""

    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def enabled(self) -> bool: ...


# A key's status, the one rule every path uses (lists, both APIs, verify, the CLI):
# the first of these that holds, in this order, else active. Each holds in Python (on a
# key) and in SQL (as a list filter); the SQL reads NULL safely, so its negation is too.
_STATUS_RULE: tuple[
    tuple[
        KeyStatus,
        Callable[[KeyState, datetime], bool],
        Callable[[datetime], ColumnElement[bool]],
    ],
    ...,
] = (
    (
        KeyStatus.REVOKED,
        lambda key, now: key.revoked_at is not None,
        lambda now: ApiKey.revoked_at.is_not(None),
    ),
    (
        KeyStatus.EXPIRED,
        lambda key, now: key.expires_at is not None and key.expires_at <= now,
        lambda now: and_(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now),
    ),
    (
        KeyStatus.DISABLED,
        lambda key, now: not key.enabled,
        lambda now: ApiKey.enabled.is_(False),
    ),
)


def key_status(key: KeyState, now: datetime) -> KeyStatus:
    return next((status for status, holds, _ in _STATUS_RULE if holds(key, now)), KeyStatus.ACTIVE)


def key_status_clause(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    """``key_status(key, now) is status``, for a query: no earlier status holds, and
    this one does (active: none does)."""
    clauses: list[ColumnElement[bool]] = []
    for candidate, _, holds in _STATUS_RULE:
        if candidate is status:
            return and_(*clauses, holds(now))
        clauses.append(not_(holds(now)))
    return and_(*clauses)


class Identity(Credited, Base):
    """Whoever holds keys, by the account's own ``external_id`` for them: a customer.

    Its credits and rate limits are shared by every key of that ``external_id`` in the
    account; a key's ``external_id`` needs no identity.
    """

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("account_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ratelimit_rows: Mapped[list[RateLimit]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="RateLimit.name"
    )


class RateLimit(Base):
    """A limit of ``limit`` uses per ``duration_ms`` on a key or on an identity. An
    auto-applied one is checked on every verify; another when a verify names it."""

    __tablename__ = "ratelimits"
    __table_args__ = (
        UniqueConstraint("key_id", "name"),
        UniqueConstraint("identity_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    limit: Mapped[int]
    duration_ms: Mapped[int]
    auto_apply: Mapped[bool] = mapped_column(default=False, server_default=false())

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "duration_ms": self.duration_ms,
            "auto_apply": self.auto_apply,
        }


class RateLimitWindow(Base):
    """Uses counted in one fixed window of one limit (``db.limits``); gone once old."""

    __tablename__ = "ratelimit_windows"

    bucket: Mapped[str] = mapped_column(String(400), primary_key=True)
    window_start_ms: Mapped[int] = mapped_column(primary_key=True)
    used: Mapped[int]
    ends_at_ms: Mapped[int] = mapped_column(index=True)


class UsageCount(Base):
    """Verifies counted in one hour (``db.usage``), by key (0: none was found), its
    ``external_id`` ("": none), the code, and ``tag``: "" for every verify, else one of
    the tags a verify carried (a verify with tags counts once in "" and once in each)."""

    __tablename__ = "usage_counts"

    # No foreign keys: a batch of counts never fails on a row that is gone (an account
    # or key deleted meanwhile); retention drops such rows with the rest.
    account_id: Mapped[int] = mapped_column(primary_key=True)
    hour: Mapped[int] = mapped_column(primary_key=True, index=True)  # since the epoch, UTC
    key_id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int]


class RateLimitOverride(Base):
    """A standalone limit's own limit for one identifier (``POST /v1/ratelimit``)."""

    __tablename__ = "ratelimit_overrides"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), primary_key=True)
    limit: Mapped[int]
    duration_ms: Mapped[int]


class Permission(Base):
    """One entry of an account's permission catalog, e.g. ``readApplications``."""

    __tablename__ = "permissions"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKeyPermission(Base):
    """A key holds a catalog permission; the catalog entry cannot go while one is held."""

    __tablename__ = "api_key_permissions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["account_id", "permission_id"],
            ["permissions.account_id", "permissions.id"],
            ondelete="RESTRICT",
        ),
        Index("ix_api_key_permissions_catalog_entry", "account_id", "permission_id"),
    )

    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    permission_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int]


class AuditEvent(Base):
    """Who changed what, when. ``changes`` never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # None for events outside any account (a failed login with an unknown username).
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    actor_type: Mapped[str] = mapped_column(String(20))  # user, api_key, anonymous
    actor_id: Mapped[int | None]
    action: Mapped[str] = mapped_column(String(50))
    target_type: Mapped[str] = mapped_column(String(20))
    target_id: Mapped[str | None] = mapped_column(String(150))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where the change came from (None: the command line or the server's own work).
    client_address: Mapped[str | None] = mapped_column(String(45))


class LoginThrottle(Base):
    """Login attempts per username in the current window (the throttle of ``db.logins``).

    Counted by one atomic statement, so every worker and instance shares the count.
    The username is kept only as a keyed hash: people type passwords into username
    fields, and unknown names are counted too.
    """

    __tablename__ = "login_throttle"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_started_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(Integer)


class Heartbeat(Base):
    """One row that the readiness check writes: proof that the database takes writes."""

    __tablename__ = "heartbeat"

    id: Mapped[int] = mapped_column(primary_key=True)
    beat_at: Mapped[datetime]


class Webhook(Base):
    """An account's endpoint for events (``db.webhooks``). Its signing secret is sealed
    under the server secret: Keyplane must read it back to sign, so no digest will do.
    After a rotation, the previous secret signs too, until ``previous_secret_expires_at``."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON)  # empty: every type
    enabled: Mapped[bool] = mapped_column(default=True)
    secret_sealed: Mapped[str] = mapped_column(String(255))
    previous_secret_sealed: Mapped[str | None] = mapped_column(String(255))
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """One event, written in the transaction of the change it tells of (the outbox).
    ``uid`` is the ``webhook-id`` every endpoint and every attempt sees."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # An event told once however many workers saw its cause (``usage.exceeded``).
    dedupe: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(index=True)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"  # every attempt of the schedule failed


class WebhookDelivery(Base):
    """An event on its way to one endpoint. Deliveries of one endpoint and one object
    (``ordering_key``) go out in the order of their events."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        Index("ix_webhook_deliveries_in_order", "webhook_id", "ordering_key", "event_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    ordering_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(_text_enum(DeliveryState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    # A sender holds the delivery until then; a sender that died lets it go then.
    leased_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    event: Mapped[WebhookEvent] = relationship(lazy="joined")


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))


class LeakReport(Base):
    """A leak report already acted on, by the SHA-256 of its signature and body: the
    same report sent again is a replay."""

    __tablename__ = "leak_reports"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
