"""Database bootstrap for local runs and tests: database, roles, schemas, migrations.

Uses the same `deploy/postgres/roles.sql` as the postgres container, so there is one definition
of the roles and their rights."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from alembic import command
from alembic.config import Config
from psycopg2 import sql
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[4]
ROLES_SQL = REPO_ROOT / "deploy" / "postgres" / "roles.sql"
SERVICES = ("users", "catalog", "orders")
log = logging.getLogger("shop_dev")


@dataclass(frozen=True)
class Cluster:
    """Where PostgreSQL is and how the superuser reaches it (direct, never through PgBouncer)."""

    admin_url: str  # libpq URL of a superuser connection to a maintenance database

    @property
    def host(self) -> str:
        return make_url(self.admin_url).host or "127.0.0.1"

    @property
    def port(self) -> int:
        return make_url(self.admin_url).port or 5432

    def dsn_for(self, database: str) -> str:
        url = make_url(self.admin_url).set(database=database)
        return url.render_as_string(hide_password=False)


def _connect(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, connect_timeout=5)
    conn.autocommit = True
    return conn


def database_exists(cluster: Cluster, name: str) -> bool:
    conn = _connect(cluster.admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def create_database(cluster: Cluster, name: str) -> bool:
    """Create the database if it is missing; True when it was created."""
    if database_exists(cluster, name):
        return False
    conn = _connect(cluster.admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return True


def drop_database(cluster: Cluster, name: str) -> None:
    conn = _connect(cluster.admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


def bootstrap_roles(
    cluster: Cluster,
    database: str,
    passwords: Mapping[str, str],
    statement_timeout: str = "5s",
) -> None:
    """Run deploy/postgres/roles.sql in `database` (idempotent)."""
    conn = _connect(cluster.dsn_for(database))
    try:
        with conn.cursor() as cur:
            for service in SERVICES:
                cur.execute(
                    "SELECT set_config(%s, %s, false)",
                    (f"shop.{service}_password", passwords[service]),
                )
            cur.execute(
                "SELECT set_config('shop.statement_timeout', %s, false)", (statement_timeout,)
            )
            # roles.sql waits for another run's lock (runs take turns); not forever.
            cur.execute("SET lock_timeout = '30s'")
            cur.execute(ROLES_SQL.read_text())
    finally:
        conn.close()


def role_url(
    cluster: Cluster,
    service: str,
    password: str,
    database: str,
    *,
    host: str | None = None,
    port: int | None = None,
    socket_dir: Path | None = None,
) -> str:
    """SQLAlchemy URL for a service role (direct by default; pass PgBouncer's host/port for runtime).
    With `socket_dir`, the Unix socket `.s.PGSQL.<port>` in that directory instead of a TCP host
    (libpq takes a `host` that starts with `/` as a socket's directory)."""
    url = make_url("postgresql+psycopg2://").set(
        username=f"{service}_svc", password=password, database=database
    )
    if socket_dir is not None:
        url = url.update_query_dict({"host": str(socket_dir), "port": str(port or cluster.port)})
    else:
        url = url.set(host=host or cluster.host, port=port or cluster.port)
    return url.render_as_string(hide_password=False)


def alembic_config(service: str, url: str) -> Config:
    ini = REPO_ROOT / "services" / service / "alembic.ini"
    config = Config(str(ini))
    config.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    return config


def migrate(service: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


def migrate_all(cluster: Cluster, database: str, passwords: Mapping[str, str]) -> None:
    for service in SERVICES:
        migrate(service, role_url(cluster, service, passwords[service], database))
