"""Per service, a PostgreSQL server in a container (testcontainers' PostgresContainer, initialised by
the repository's deploy/postgres/initdb like the compose file does) with the PgBouncer image in
front of it (the repository's ini and entry point):

- the service's migrations: upgrade head → downgrade base → upgrade head, as its own role, directly;
- its role logs in through the PgBouncer container and reads its schema;
- then one file of each service's own database tests (SERVICE_DB_TESTS) runs against a server in a
  container: the test harness creates its throwaway database there (SHOP_TEST_PG_ADMIN_URL).

The subsets are one file per service, chosen for the SQL they exercise (accounts and their unique
constraints; reservations with row locks; the recovery job's scans), run in one pytest process to keep
`make containers` within its budget (one run per service, three files each, took 70-165 s per
service on a loaded 2-core machine); the full suites run on the local server in `make test`."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_IMAGE = "postgres:15-alpine"  # the compose file's images
PGBOUNCER_IMAGE = "edoburu/pgbouncer:v1.25.2-p0"
SERVICE_DB_TESTS = {
    "users": ["test_registration.py"],
    "catalog": ["test_reservations.py"],
    "orders": ["test_recovery.py"],
}
SUBSET_DEADLINE_SECONDS = 600

pytestmark = pytest.mark.docker


@dataclass
class Servers:
    host: str
    postgres_port: int
    bouncer_port: int
    superuser_password: str
    role_passwords: dict[str, str]  # service -> password of <service>_svc

    def direct(self, user: str, password: str, dbname: str = "shop") -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.postgres_port}/{dbname}"

    def superuser(self, dbname: str = "shop") -> str:
        return self.direct("postgres", self.superuser_password, dbname)


@pytest.fixture(params=sorted(SERVICE_DB_TESTS))
def servers(request: pytest.FixtureRequest, docker_engine: None) -> Iterator[tuple[str, Servers]]:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    service: str = request.param
    passwords = {svc: secrets.token_urlsafe(16) for svc in SERVICE_DB_TESTS}
    env = {f"{svc.upper()}_DB_PASSWORD": pw for svc, pw in passwords.items()}
    superuser_password = secrets.token_urlsafe(16)
    postgres = (
        PostgresContainer(
            POSTGRES_IMAGE, username="postgres", password=superuser_password, dbname="shop"
        )
        .with_volume_mapping(str(ROOT / "deploy/postgres/initdb"), "/docker-entrypoint-initdb.d")
        .with_volume_mapping(str(ROOT / "deploy/postgres/roles.sql"), "/opt/shop/roles.sql")
        .with_envs(**env)
    )
    bouncer = (
        DockerContainer(PGBOUNCER_IMAGE)
        .with_kwargs(entrypoint=["/bin/sh", "/opt/shop/docker-entrypoint.sh"])
        .with_volume_mapping(
            str(ROOT / "deploy/pgbouncer/pgbouncer.ini"), "/etc/pgbouncer/pgbouncer.ini"
        )
        .with_volume_mapping(
            str(ROOT / "deploy/pgbouncer/docker-entrypoint.sh"), "/opt/shop/docker-entrypoint.sh"
        )
        .with_envs(**env)
        .with_exposed_ports(6432)
        .waiting_for(LogMessageWaitStrategy("process up"))
    )
    with Network() as network:
        postgres.with_network(network).with_network_aliases("postgres")
        bouncer.with_network(network)
        with postgres, bouncer:
            host = postgres.get_container_host_ip()
            yield (
                service,
                Servers(
                    "127.0.0.1" if host == "localhost" else host,
                    int(postgres.get_exposed_port(5432)),
                    int(bouncer.get_exposed_port(6432)),
                    superuser_password,
                    passwords,
                ),
            )


def _tables(servers: Servers, schema: str) -> set[str]:
    with (
        closing(psycopg2.connect(servers.superuser(), connect_timeout=10)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
        return {row[0] for row in cur.fetchall()}


def _versions(servers: Servers, schema: str) -> list[str]:
    with (
        closing(psycopg2.connect(servers.superuser(), connect_timeout=10)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f'SELECT version_num FROM "{schema}".alembic_version')
        return [row[0] for row in cur.fetchall()]


def _alembic(servers: Servers, service: str, *args: str) -> None:
    """The migrate job's command (docker-compose.yml), run here against the container."""
    url = servers.direct(f"{service}_svc", servers.role_passwords[service]).replace(
        "postgresql://", "postgresql+psycopg2://"
    )
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", f"services/{service}/alembic.ini", *args],
        cwd=ROOT,
        env={**os.environ, "MIGRATIONS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"alembic {' '.join(args)}:\n{result.stderr[-4000:]}"


def test_migrations_upgrade_downgrade_upgrade_and_the_role_through_pgbouncer(
    servers: tuple[str, Servers],
) -> None:
    service, srv = servers

    _alembic(srv, service, "upgrade", "head")
    tables = _tables(srv, service)
    head = _versions(srv, service)
    assert len(head) == 1
    assert tables - {"alembic_version"}, f"no table in schema {service} after upgrade"

    _alembic(srv, service, "downgrade", "base")
    assert _tables(srv, service) <= {"alembic_version"}
    assert _versions(srv, service) == []

    _alembic(srv, service, "upgrade", "head")
    assert _tables(srv, service) == tables
    assert _versions(srv, service) == head

    # The service's role, through the PgBouncer container, the way the service connects.
    with (
        closing(
            psycopg2.connect(
                host=srv.host,
                port=srv.bouncer_port,
                user=f"{service}_svc",
                password=srv.role_passwords[service],
                dbname="shop",
                connect_timeout=10,
            )
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            f"SELECT current_user, current_setting('statement_timeout'), "
            f'(SELECT version_num FROM "{service}".alembic_version)'
        )
        assert cur.fetchone() == (f"{service}_svc", "5s", head[0])


def test_the_services_database_tests_pass_against_a_server_in_a_container(
    docker_engine: None,
) -> None:
    """One file of each service's own database tests, in one pytest run (the harness's start-up,
    a minute on a loaded machine, is paid once): the harness creates its throwaway database, roles
    and migrations on this server (SHOP_TEST_PG_ADMIN_URL) and runs its own PgBouncer before it."""
    from testcontainers.community.postgres import PostgresContainer

    password = secrets.token_urlsafe(16)
    with PostgresContainer(POSTGRES_IMAGE, username="postgres", password=password) as postgres:
        host = postgres.get_container_host_ip()
        host = "127.0.0.1" if host == "localhost" else host
        admin_url = (
            f"postgresql://postgres:{password}@{host}:{postgres.get_exposed_port(5432)}/postgres"
        )
        files = [
            f"services/{service}/tests/{name}"
            for service, names in sorted(SERVICE_DB_TESTS.items())
            for name in names
        ]
        env = {**os.environ, "SHOP_TEST_PG_ADMIN_URL": admin_url}
        env.pop("REQUIRE_DOCKER", None)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBSET_DEADLINE_SECONDS,
            check=False,
        )
    summary = result.stdout.strip().splitlines()[-1:] or [""]
    assert result.returncode == 0, (
        f"{' '.join(files)}:\n{result.stdout[-6000:]}{result.stderr[-2000:]}"
    )
    assert " passed" in summary[0], summary
