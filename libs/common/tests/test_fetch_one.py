"""fetch_one: one statement in autocommit on a pooled connection, errors as SQLAlchemy's."""

from __future__ import annotations

import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from psycopg2.extensions import parse_dsn
from sqlalchemy import Engine, event, make_url
from sqlalchemy.exc import DataError, OperationalError

from shop_common import db
from shop_common.db import _UNPOOLED, count_queries, fetch_one, make_engine, make_reader
from shop_dev.testing import ShopDatabase


@pytest.fixture
def pooled(scratch_db: str) -> Any:
    engine = make_engine(scratch_db, pool_size=1)  # one connection: the next call reuses it
    yield engine
    engine.dispose()


def _autocommit_of_the_pooled_connection(engine: Engine) -> bool:
    with engine.connect() as connection:
        driver: Any = connection.connection.driver_connection
        return bool(driver.autocommit)


def test_the_first_row_or_none_and_the_statement_is_counted(pooled: Engine) -> None:
    reader = make_reader(pooled)

    with count_queries(pooled) as statements:
        row = fetch_one(reader, "SELECT %(n)s::int + 1, 'x'", {"n": 41})

    assert row == (42, "x")
    assert statements.value == 1
    assert fetch_one(reader, "SELECT 1 WHERE false", {}) is None
    assert _autocommit_of_the_pooled_connection(pooled) is False  # reset before it went back


def test_a_failing_statement_is_sqlalchemys_error_and_the_connection_is_not_reused(
    pooled: Engine,
) -> None:
    reader = make_reader(pooled)

    with pytest.raises(DataError):
        fetch_one(reader, "SELECT 1 / %(zero)s", {"zero": 0})

    assert fetch_one(reader, "SELECT 7", {}) == (7,)  # a fresh connection, not a broken one
    assert _autocommit_of_the_pooled_connection(pooled) is False


def test_an_unreachable_database_is_an_operational_error() -> None:
    engine = make_engine("postgresql+psycopg2://nobody:pw@127.0.0.1:9/none")  # discard port

    with pytest.raises(OperationalError):
        fetch_one(make_reader(engine), "SELECT 1", {})


def _my_connections(engine: Engine) -> int:
    """Backends of this test database other than the one asking."""
    with engine.connect() as connection:
        count: int = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar_one()
    return count


def test_with_nullpool_each_statement_opens_and_closes_its_own_connection(
    scratch_db: str,
) -> None:
    engine = make_engine(scratch_db)  # NullPool, as the services run
    reader = make_reader(engine)
    backends: list[int] = []

    def on_connect(dbapi_connection: Any, _record: object) -> None:
        backends.append(dbapi_connection.get_backend_pid())

    before = _my_connections(engine)  # also the engine's first connect (which builds the DSN)
    event.listen(engine, "connect", on_connect)
    try:
        with count_queries(engine) as statements:
            rows = [fetch_one(reader, "SELECT pg_backend_pid()", {}) for _ in range(3)]
    finally:
        event.remove(engine, "connect", on_connect)

    assert statements.value == 3
    assert [row[0] for row in rows if row is not None] == backends  # the pool's listeners ran
    assert len(set(backends)) == 3  # a fresh connection each time, as NullPool gives
    assert _my_connections(engine) == before  # and each one closed
    engine.dispose()


def test_with_nullpool_errors_are_sqlalchemys_and_leave_no_connection(scratch_db: str) -> None:
    engine = make_engine(scratch_db)
    reader = make_reader(engine)
    assert fetch_one(reader, "SELECT 1", {}) == (1,)  # the first connect goes through the pool
    before = _my_connections(engine)

    with pytest.raises(DataError):
        fetch_one(reader, "SELECT 1 / %(zero)s", {"zero": 0})

    assert _my_connections(engine) == before
    assert fetch_one(reader, "SELECT 7", {}) == (7,)
    engine.dispose()


def test_the_password_reaches_libpq_in_a_memory_passfile_not_the_dsn(
    shop_db: ShopDatabase,
) -> None:
    url = shop_db.bouncer_url("catalog")  # md5 through PgBouncer: the password is checked
    engine = make_engine(url)
    assert fetch_one(make_reader(engine), "SELECT current_user", {}) == ("catalog_svc",)

    dsn = _UNPOOLED[engine.pool].dsn
    assert dsn is not None
    assert "password" not in parse_dsn(dsn)
    passfile = Path(parse_dsn(dsn)["passfile"])
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert not list(Path(tempfile.gettempdir()).glob("*pgpass*"))  # nothing on disk
    wrong = make_url(url).set(password="not-the-password")
    with pytest.raises(OperationalError):  # the passfile holds what the URL said
        fetch_one(
            make_reader(make_engine(wrong.render_as_string(hide_password=False))), "SELECT 1", {}
        )
    engine.dispose()


def test_concurrent_first_logins_build_one_passfile_and_all_log_in(
    shop_db: ShopDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh worker's first requests log in at once, each in its own thread. Each used to build
    its own passfile; the one it replaced was closed while a login was still to read it ("no
    password supplied": a 503 in CI, 2026-12-07)."""
    engine = make_engine(shop_db.bouncer_url("catalog"))
    built: list[str] = []
    real = db._memory_passfile

    def slow_passfile(password: str) -> Any:
        built.append(password)
        made = real(password)
        time.sleep(0.2)  # hold the first login's setup open while the others arrive
        return made

    monkeypatch.setattr(db, "_memory_passfile", slow_passfile)
    logins = 8
    start = threading.Barrier(logins)

    def login(_: int) -> Any:
        start.wait(timeout=10)
        return fetch_one(make_reader(engine), "SELECT current_user", {})

    with ThreadPoolExecutor(logins) as pool:
        rows = list(pool.map(login, range(logins)))

    assert rows == [("catalog_svc",)] * logins
    assert len(built) == 1
    engine.dispose()
