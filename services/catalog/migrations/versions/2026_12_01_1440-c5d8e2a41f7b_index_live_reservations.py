"""index held and committed reservations by (updated_at, id)

Orders' reconciliation pass pages through them (GET /internal/reservations).

Revision ID: c5d8e2a41f7b
Revises: 7b41d2e9c3a2
Create Date: 2026-12-01 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5d8e2a41f7b"
down_revision: str | None = "7b41d2e9c3a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_reservations_live_updated_at",
        "reservations",
        ["updated_at", "id"],
        unique=False,
        schema="catalog",
        postgresql_where=sa.text("status IN ('held', 'committed')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_reservations_live_updated_at",
        table_name="reservations",
        schema="catalog",
        postgresql_where=sa.text("status IN ('held', 'committed')"),
    )
