"""an account's keys, newest first, straight from an index

A list is ``WHERE account_id = ? ORDER BY id DESC LIMIT n``. SQLite's index on
``account_id`` holds the rowid and serves that order already; PostgreSQL's does not,
so with many accounts it must either sort an account's keys or walk every account's
newer keys along the primary key. ``(account_id, id)`` serves the page directly.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_account_id_id", ["account_id", "id"], unique=False)
        batch_op.drop_index("ix_api_keys_account_id")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_account_id", ["account_id"], unique=False)
        batch_op.drop_index("ix_api_keys_account_id_id")
