"""the right to verify: every account gets Keyplane's own permission keyplane.verify

Verify now asks for a credential: an admin's token, or an API key of the account that
holds ``keyplane.verify``. Admins grant it to keys; members cannot (``db.policies``).
An account that had made a permission of that name for its customers gets Keyplane's
in its place: what its keys held was no right to verify, so they hold it no more.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# db.permissions.VERIFY and its description as of this revision.
VERIFY = "keyplane.verify"
DESCRIPTION = "Verify this account's API keys (Keyplane's own right)"


def upgrade() -> None:
    accounts = sa.table("accounts", sa.column("id", ID))
    permissions = sa.table(
        "permissions",
        sa.column("account_id", ID),
        sa.column("id", sa.String),
        sa.column("description", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    links = sa.table("api_key_permissions", sa.column("permission_id", sa.String))
    op.execute(links.delete().where(links.c.permission_id == VERIFY))
    op.execute(permissions.delete().where(permissions.c.id == VERIFY))
    op.execute(
        permissions.insert().from_select(
            ["account_id", "id", "description", "created_at"],
            sa.select(
                accounts.c.id,
                sa.literal(VERIFY),
                sa.literal(DESCRIPTION),
                sa.func.current_timestamp(),
            ),
        )
    )


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM api_key_permissions WHERE permission_id = :id").bindparams(id=VERIFY)
    )
    op.execute(sa.text("DELETE FROM permissions WHERE id = :id").bindparams(id=VERIFY))
