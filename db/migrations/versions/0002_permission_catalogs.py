"""permission catalogs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Every account, old or new, starts with this catalog (db.permissions.DEFAULT_CATALOG
# as of this revision; a later change to the default is a later revision).
DEFAULT_CATALOG = [
    ("readApplications", "Read applications"),
    ("writeApplications", "Create, update and delete applications"),
]

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "permissions",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_permissions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "id", name=op.f("pk_permissions")),
    )
    op.create_table(
        "api_key_permissions",
        sa.Column("api_key_id", ID, nullable=False),
        sa.Column("permission_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id", "permission_id"],
            ["permissions.account_id", "permissions.id"],
            name=op.f("fk_api_key_permissions_account_id_permissions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_api_key_permissions_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", "permission_id", name=op.f("pk_api_key_permissions")),
    )
    with op.batch_alter_table("api_key_permissions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_api_key_permissions_catalog_entry", ["account_id", "permission_id"], unique=False
        )

    accounts = sa.table("accounts", sa.column("id", ID))
    permissions = sa.table(
        "permissions",
        sa.column("account_id", ID),
        sa.column("id", sa.String),
        sa.column("description", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    for permission_id, description in DEFAULT_CATALOG:
        op.execute(
            permissions.insert().from_select(
                ["account_id", "id", "description", "created_at"],
                sa.select(
                    accounts.c.id,
                    sa.literal(permission_id),
                    sa.literal(description),
                    sa.func.current_timestamp(),
                ),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("api_key_permissions", schema=None) as batch_op:
        batch_op.drop_index("ix_api_key_permissions_catalog_entry")

    op.drop_table("api_key_permissions")
    op.drop_table("permissions")
