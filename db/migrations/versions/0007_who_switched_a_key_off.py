"""why a key is switched off: by its owner, an admin, the owner's removal or deactivation

Keys switched off before this revision count as switched off by an admin: only an
admin turns them on again, as the documentation already said.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # In place (ALTER TABLE ... ADD COLUMN), never by copying the table: see 0006.
    reasons = sa.Enum(
        "owner", "admin", "removal", "deactivation", name="disabledby", native_enum=False, length=20
    )
    op.add_column("api_keys", sa.Column("disabled_by", reasons, nullable=True))
    op.execute("UPDATE api_keys SET disabled_by = 'admin' WHERE NOT enabled")


def downgrade() -> None:
    op.drop_column("api_keys", "disabled_by")
