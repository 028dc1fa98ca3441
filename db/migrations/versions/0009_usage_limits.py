"""usage limits: credits on keys and identities, identities, rate limits and their
windows, standalone limits' overrides

Existing keys have no credits and no rate limits: they verify as before.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.DateTime(timezone=True)


def _credits() -> list[sa.Column[object]]:
    interval = sa.Enum("daily", "monthly", name="refillinterval", native_enum=False, length=20)
    return [
        sa.Column("credits_remaining", sa.BigInteger(), nullable=True),
        sa.Column("refill_interval", interval, nullable=True),
        sa.Column("refill_amount", sa.BigInteger(), nullable=True),
        sa.Column("refill_day", sa.Integer(), nullable=True),
        sa.Column("refilled_at", NOW, nullable=True),
    ]


def upgrade() -> None:
    # In place (ALTER TABLE ... ADD COLUMN), never by copying the table: see 0006.
    for column in _credits():
        op.add_column("api_keys", column)
    op.create_table(
        "identities",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "account_id", ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("updated_at", NOW, nullable=False),
        *_credits(),
        sa.UniqueConstraint("account_id", "external_id"),
    )
    op.create_table(
        "ratelimits",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "account_id", ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_id", ID, sa.ForeignKey("api_keys.id", ondelete="CASCADE")),
        sa.Column("identity_id", ID, sa.ForeignKey("identities.id", ondelete="CASCADE")),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("limit", ID, nullable=False),
        sa.Column("duration_ms", ID, nullable=False),
        sa.Column("auto_apply", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.UniqueConstraint("key_id", "name"),
        sa.UniqueConstraint("identity_id", "name"),
    )
    op.create_table(
        "ratelimit_windows",
        sa.Column("bucket", sa.String(400), primary_key=True),
        sa.Column("window_start_ms", ID, primary_key=True),
        sa.Column("used", ID, nullable=False),
        sa.Column("ends_at_ms", ID, nullable=False, index=True),
    )
    op.create_table(
        "ratelimit_overrides",
        sa.Column(
            "account_id", ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("identifier", sa.String(255), primary_key=True),
        sa.Column("limit", ID, nullable=False),
        sa.Column("duration_ms", ID, nullable=False),
    )


def downgrade() -> None:
    for table in ("ratelimit_overrides", "ratelimit_windows", "ratelimits", "identities"):
        op.drop_table(table)
    for column in ("refilled_at", "refill_day", "refill_amount", "refill_interval"):
        op.drop_column("api_keys", column)
    op.drop_column("api_keys", "credits_remaining")
