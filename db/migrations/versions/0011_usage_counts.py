"""usage counts: verifies per hour, key, external_id, code and tag

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_counts",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("hour", ID, primary_key=True, index=True),
        sa.Column("key_id", ID, primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
        sa.Column("count", ID, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_counts")
