"""Alembic environment of the catalog service: only schema "catalog", version table in it, direct URL."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

import catalog.models  # noqa: F401 - registers every table on the metadata
from catalog.db import SCHEMA, metadata
from catalog.models import EXPRESSION_INDEXES

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


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Autogenerate cannot compare expression indexes (both sides are skipped); migrations own them.
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=include_name,
        include_object=include_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    global _default_schema
    # The role's search_path is its own schema; reflected foreign keys would then lose their schema
    # and autogenerate would report each one as changed. Migrations connect directly (never through
    # PgBouncer), so the `options` startup parameter is fine here.
    engine = sa.create_engine(
        _url(), poolclass=NullPool, connect_args={"options": "-c search_path=pg_catalog"}
    )
    with engine.connect() as connection:
        _default_schema = connection.dialect.default_schema_name
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=SCHEMA,
            include_schemas=True,
            include_name=include_name,
            include_object=include_object,
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
