"""Alembic environment of the orders service: schema "orders" only (shop_common.migrations)."""

from __future__ import annotations

import orders.models  # noqa: F401 - registers every table on the metadata
from orders.db import SCHEMA, metadata
from shop_common.migrations import run_migrations

run_migrations(SCHEMA, metadata)
