"""keys that carry the customer's id and data and can be switched off; account key
policies; user tokens that a password change ends

Existing keys stay enabled, with no external id or meta; an expiry set before this
revision is not treated as an admin's (members keep the freedom they had). Accounts
start without a policy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Columns are added in place (ALTER TABLE ... ADD COLUMN), never by copying a table:
# SQLite's copy would drop the old table, and its foreign keys would cascade that drop
# into every key and permission link.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("external_id", sa.String(length=255), nullable=True))
    op.add_column("api_keys", sa.Column("meta", sa.JSON(), nullable=True))
    op.add_column(
        "api_keys", sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False)
    )
    op.add_column(
        "api_keys",
        sa.Column("expiry_set_by_admin", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index("ix_api_keys_account_id_external_id", "api_keys", ["account_id", "external_id"])
    op.add_column("accounts", sa.Column("max_key_lifetime_seconds", ID, nullable=True))
    op.add_column(
        "accounts",
        sa.Column("expiry_required", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("accounts", sa.Column("member_permissions", sa.JSON(), nullable=True))
    op.add_column(
        "users", sa.Column("token_generation", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    # SQLite drops a column in place too (3.35+), as long as no index or key names it.
    op.drop_column("users", "token_generation")
    op.drop_column("accounts", "member_permissions")
    op.drop_column("accounts", "expiry_required")
    op.drop_column("accounts", "max_key_lifetime_seconds")
    op.drop_index("ix_api_keys_account_id_external_id", "api_keys")
    for column in ("expiry_set_by_admin", "enabled", "meta", "external_id"):
        op.drop_column("api_keys", column)
