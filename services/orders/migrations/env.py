"""Alembic environment of the orders service: only schema "orders", version table in it, direct URL."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

import orders.models  # noqa: F401 - registers every table on the metadata
from orders.db import SCHEMA, metadata

config = context.config
_default_schema: str | None = None


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "MIGRATIONS_DATABASE_URL"
    )
    if not url:
        raise SystemExit("set MIGRATIONS_DATABASE_URL (a direct PostgreSQL URL) or pass -x url=...")
    return url


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "schema":  # None means the connection's default schema
        return (name or _default_schema) == SCHEMA
    return not (type_ == "table" and name == "alembic_version")


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=include_name,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    global _default_schema
    engine = sa.create_engine(_url(), poolclass=NullPool)
    with engine.begin() as connection:
        # The role's search_path puts "orders" first, and PostgreSQL then reports foreign keys to
        # orders.* without their schema, so `alembic check` would see every FK as changed.
        # Reflect with a search_path that does not contain the schema (transaction-local, so it is
        # safe through PgBouncer too) and tell the dialect about it.
        connection.execute(sa.text("SET LOCAL search_path = pg_catalog"))
        connection.dialect.default_schema_name = "pg_catalog"
        _default_schema = connection.dialect.default_schema_name
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            # The role's statement_timeout is for requests, not for DDL.
            connection.execute(sa.text("SET LOCAL statement_timeout = 0"))
            connection.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
