"""The Alembic environment every service's `migrations/env.py` runs: one schema, its own version
table, a DIRECT PostgreSQL URL (never PgBouncer), autogenerate limited to that schema.

Import this only from an env.py (it uses `alembic.context`, which exists only inside Alembic)."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

# Reflection runs with search_path = pg_catalog: under the role's own search_path PostgreSQL
# reports foreign keys into the schema without the schema name, and `alembic check` would see
# every foreign key as changed. Migrations must therefore schema-qualify any raw SQL they run.
_SEARCH_PATH = "pg_catalog"


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "MIGRATIONS_DATABASE_URL"
    )
    if not url:
        raise SystemExit("set MIGRATIONS_DATABASE_URL (a direct PostgreSQL URL) or pass -x url=...")
    return url


def run_migrations(
    schema: str, metadata: sa.MetaData, *, expression_indexes: Collection[str] = ()
) -> None:
    """`expression_indexes`: index names autogenerate cannot compare; their migrations own them."""

    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        if type_ == "schema":  # None is the connection's default schema (pg_catalog here)
            return name == schema
        return not (type_ == "table" and name == "alembic_version")

    def include_object(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        return not (type_ == "index" and name in expression_indexes)

    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table_schema": schema,
        "include_schemas": True,
        "include_name": include_name,
        "include_object": include_object,
    }
    if context.is_offline_mode():
        context.configure(url=_url(), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    engine = sa.create_engine(
        _url(), poolclass=NullPool, connect_args={"options": f"-c search_path={_SEARCH_PATH}"}
    )
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, compare_type=True, **options)
            with context.begin_transaction():
                # The role's statement_timeout is for requests, not for DDL.
                connection.execute(sa.text("SET LOCAL statement_timeout = 0"))
                connection.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                context.run_migrations()
    finally:
        engine.dispose()
