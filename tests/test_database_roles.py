"""Least-privilege roles and schemas (deploy/postgres/roles.sql), seen through the real PgBouncer."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from psycopg2 import errorcodes
from sqlalchemy.engine import make_url

from shop_dev.bootstrap import bootstrap_roles, create_database, drop_database
from shop_dev.defaults import role_passwords
from shop_dev.testing import ShopDatabase


def _dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def _query(url: str, statement: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(_dsn(url), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize(
    ("role", "foreign_table"),
    [("orders", "users.users"), ("catalog", "orders.orders"), ("users", "catalog.products")],
)
@pytest.mark.parametrize("through", ["pgbouncer", "direct"])
def test_a_service_role_cannot_read_another_services_tables(
    shop_db: ShopDatabase, role: str, foreign_table: str, through: str
) -> None:
    url = shop_db.bouncer_url(role) if through == "pgbouncer" else shop_db.direct_url(role)

    with pytest.raises(psycopg2.Error) as caught:
        _query(url, f"SELECT * FROM {foreign_table} LIMIT 1")

    assert caught.value.pgcode == errorcodes.INSUFFICIENT_PRIVILEGE


@pytest.mark.parametrize("service", ["users", "catalog", "orders"])
def test_each_role_owns_only_its_own_schema(shop_db: ShopDatabase, service: str) -> None:
    rows = _query(
        shop_db.admin_url,
        "SELECT nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
        f"WHERE r.rolname = '{service}_svc' ORDER BY nspname",
    )

    assert rows == [(service,)]


@pytest.mark.parametrize("service", ["users", "catalog", "orders"])
def test_roles_are_not_privileged_and_have_a_statement_timeout(
    shop_db: ShopDatabase, service: str
) -> None:
    [(is_super, can_create_db, can_create_role)] = _query(
        shop_db.admin_url,
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
        f"WHERE rolname = '{service}_svc'",
    )
    [(timeout,)] = _query(shop_db.bouncer_url(service), "SHOW statement_timeout")

    assert (is_super, can_create_db, can_create_role) == (False, False, False)
    assert timeout == "5s"


def test_no_role_can_create_objects_in_public(shop_db: ShopDatabase) -> None:
    with pytest.raises(psycopg2.Error) as caught:
        _query(shop_db.direct_url("orders"), "CREATE TABLE public.sneaky (id int)")

    assert caught.value.pgcode == errorcodes.INSUFFICIENT_PRIVILEGE


def test_pgbouncer_reuses_one_server_connection_for_successive_clients(
    shop_db: ShopDatabase,
) -> None:
    url = shop_db.bouncer_url("catalog")

    pids = {_query(url, "SELECT pg_backend_pid()")[0][0] for _ in range(5)}
    direct_pids = {
        _query(shop_db.direct_url("catalog"), "SELECT pg_backend_pid()")[0][0] for _ in range(3)
    }

    assert len(pids) == 1  # pooled: every new client login got the same backend
    assert len(direct_pids) == 3  # direct: a new backend per connection


def test_two_databases_bootstrapped_at_once_both_get_their_roles(shop_db: ShopDatabase) -> None:
    """Roles are the cluster's: two stacks starting side by side (bench/ab.py, two test sessions)
    run roles.sql at the same moment on the same role rows. Without the lock roles.sql takes
    first, one of them failed with 'tuple concurrently updated'."""
    names = [f"shop_twin_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for name in names:
        create_database(shop_db.cluster, name)
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            for _ in range(8):
                start = threading.Barrier(len(names))

                def bootstrap(name: str, start: threading.Barrier = start) -> None:
                    start.wait(10)
                    bootstrap_roles(shop_db.cluster, name, role_passwords())

                for done in [pool.submit(bootstrap, name) for name in names]:
                    done.result(timeout=60)
        for name in names:
            owners = _query(
                shop_db.cluster.dsn_for(name).replace("postgresql://", "postgresql+psycopg2://"),
                "SELECT n.nspname, r.rolname FROM pg_namespace n JOIN pg_roles r"
                " ON r.oid = n.nspowner WHERE n.nspname IN ('users', 'catalog', 'orders')"
                " ORDER BY 1",
            )
            assert owners == [
                ("catalog", "catalog_svc"),
                ("orders", "orders_svc"),
                ("users", "users_svc"),
            ]
    finally:
        for name in names:
            drop_database(shop_db.cluster, name)
