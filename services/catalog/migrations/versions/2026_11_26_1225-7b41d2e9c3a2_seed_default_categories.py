"""seed default categories

Revision ID: 7b41d2e9c3a2
Revises: 3f2a9c1d0e01
Create Date: 2026-11-26 12:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7b41d2e9c3a2"
down_revision: str | None = "3f2a9c1d0e01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy: a data migration must not import application code that may change later.
DEFAULT_CATEGORIES = (
    ("Electronics", "electronics", "Phones, computers, audio and accessories."),
    ("Books", "books", "Printed books and e-books."),
    ("Clothing", "clothing", "Clothes, shoes and accessories."),
    ("Home & Garden", "home-garden", "Furniture, kitchen, tools and garden."),
)


def upgrade() -> None:
    for name, slug, description in DEFAULT_CATEGORIES:
        op.execute(
            sa.text(
                "INSERT INTO catalog.categories (name, slug, description) "
                "VALUES (:name, :slug, :description) ON CONFLICT (slug) DO NOTHING"
            ).bindparams(name=name, slug=slug, description=description)
        )


def downgrade() -> None:
    # Only the defaults that nothing references: a category that meanwhile got products or
    # children belongs to the data, not to this migration.
    op.execute(
        sa.text(
            "DELETE FROM catalog.categories c WHERE c.slug = ANY(:slugs) AND c.parent_id IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM catalog.products p WHERE p.category_id = c.id)"
            " AND NOT EXISTS (SELECT 1 FROM catalog.categories k WHERE k.parent_id = c.id)"
        ).bindparams(sa.bindparam("slugs", [s for _, s, _ in DEFAULT_CATEGORIES]))
    )
