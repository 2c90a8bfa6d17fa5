"""Alembic environment of the users service: schema "users" only (shop_common.migrations)."""

from __future__ import annotations

import users.models  # noqa: F401 - registers every table on the metadata
from shop_common.migrations import run_migrations
from users.db import SCHEMA, metadata

run_migrations(SCHEMA, metadata)
