"""webhooks and leaks: endpoints, the outbox of events, deliveries and their attempts,
the leak reports already acted on, what a leak does to an account's keys, and which
expiry a key was last warned of

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOW = sa.DateTime(timezone=True)


def _account() -> sa.Column[object]:
    return sa.Column(
        "account_id", ID, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    # In place (ALTER TABLE ... ADD COLUMN), never by copying the table: see 0006.
    op.add_column(
        "accounts", sa.Column("on_leak", sa.String(20), server_default="revoke", nullable=False)
    )
    op.add_column("api_keys", sa.Column("expiry_warned_for", NOW, nullable=True))
    op.create_table(
        "webhooks",
        sa.Column("id", ID, primary_key=True),
        _account(),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_sealed", sa.String(255), nullable=False),
        sa.Column("previous_secret_sealed", sa.String(255), nullable=True),
        sa.Column("previous_secret_expires_at", NOW, nullable=True),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("updated_at", NOW, nullable=False),
    )
    op.create_index("ix_webhooks_account_id_id", "webhooks", ["account_id", "id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("uid", sa.String(40), nullable=False, unique=True),
        _account(),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe", sa.String(200), nullable=True, unique=True),
        sa.Column("created_at", NOW, nullable=False),
    )
    op.create_index("ix_webhook_events_account_id", "webhook_events", ["account_id"])
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    state = sa.Enum(
        "pending", "delivered", "dead", name="deliverystate", native_enum=False, length=20
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "webhook_id", ID, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "event_id", ID, sa.ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("ordering_key", sa.String(64), nullable=False),
        sa.Column("state", state, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", NOW, nullable=False),
        sa.Column("leased_until", NOW, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", NOW, nullable=False),
        sa.Column("finished_at", NOW, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])
    op.create_index(
        "ix_webhook_deliveries_state_next_attempt_at",
        "webhook_deliveries",
        ["state", "next_attempt_at"],
    )
    op.create_index(
        "ix_webhook_deliveries_webhook_id_id", "webhook_deliveries", ["webhook_id", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_in_order",
        "webhook_deliveries",
        ["webhook_id", "ordering_key", "event_id"],
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "delivery_id",
            ID,
            sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempted_at", NOW, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_table(
        "leak_reports",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("received_at", NOW, nullable=False),
    )
    op.create_index("ix_leak_reports_received_at", "leak_reports", ["received_at"])


def downgrade() -> None:
    for table in (
        "leak_reports",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_events",
        "webhooks",
    ):
        op.drop_table(table)
    op.drop_column("api_keys", "expiry_warned_for")
    op.drop_column("accounts", "on_leak")
