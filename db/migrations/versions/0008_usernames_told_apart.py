"""usernames told apart by their sign-in key (NFKC, case-folded) and look-alike key

Each existing user gets both keys. Where two existing names share a key (``Bob`` and
``bob``), the older user keeps it and the newer gets the key with ``#`` and its id:
it still signs in by its exact name, and a new name cannot take either.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

from keyplane.db.usernames import lookalike_key, sign_in_key

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS: dict[str, Callable[[str], str]] = {
    "username_key": sign_in_key,
    "lookalike_key": lookalike_key,
}


def upgrade() -> None:
    # In place (ALTER TABLE ... ADD COLUMN), never by copying the table: see 0006.
    for column in KEYS:
        op.add_column(
            "users", sa.Column(column, sa.String(length=150), server_default="", nullable=False)
        )
    connection = op.get_bind()
    users = connection.execute(sa.text("SELECT id, username FROM users ORDER BY id")).all()
    for column, key_of in KEYS.items():
        held: set[str] = set()
        for user_id, username in users:
            key = key_of(username)
            if key in held:
                key = f"{key}#{user_id}"
            held.add(key)
            connection.execute(
                sa.text(f"UPDATE users SET {column} = :key WHERE id = :id"),  # noqa: S608
                {"key": key, "id": user_id},
            )
        op.create_index(f"uq_users_{column}", "users", [column], unique=True)


def downgrade() -> None:
    for column in KEYS:
        op.drop_index(f"uq_users_{column}", "users")
        op.drop_column("users", column)
