"""add password_changed_at

Revision ID: 8c3f1a6e2b71
Revises: 5b1e7c2d9a40
Create Date: 2026-11-26 12:55:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c3f1a6e2b71"
down_revision: str | None = "5b1e7c2d9a40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: instant on a large table, and NULL means "never changed".
    op.add_column(
        "users",
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        schema="users",
    )


def downgrade() -> None:
    op.drop_column("users", "password_changed_at", schema="users")
