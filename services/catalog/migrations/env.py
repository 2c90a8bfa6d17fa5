"""Alembic environment of the catalog service: schema "catalog" only (shop_common.migrations)."""

from __future__ import annotations

import catalog.models  # noqa: F401 - registers every table on the metadata
from catalog.db import SCHEMA, metadata
from catalog.models import EXPRESSION_INDEXES
from shop_common.migrations import run_migrations

run_migrations(SCHEMA, metadata, expression_indexes=EXPRESSION_INDEXES)
