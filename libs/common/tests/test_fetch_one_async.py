"""fetch_one_async: fetch_one's contract on the event loop (no thread), every wait bounded."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import uvloop
from sqlalchemy import Engine, event, make_url
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError

import shop_common.db
from shop_common.db import (
    _UNPOOLED,
    _LoopTarget,
    count_queries,
    fetch_one,
    fetch_one_async,
    make_engine,
    make_reader,
)
from shop_dev.testing import ShopDatabase

T = TypeVar("T")
Runner = Callable[[Awaitable[T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """The services run on uvloop; asyncio's own loop must work the same."""

    def runner(awaitable: Awaitable[T]) -> T:
        async def main() -> T:
            return await awaitable

        if request.param == "uvloop":
            return uvloop.run(main())
        return asyncio.run(main())

    return runner


@pytest.fixture(params=["unix socket", "tcp", "libpq may reconnect"])
def bouncer(request: pytest.FixtureRequest, shop_db: ShopDatabase) -> Iterator[Engine]:
    """users' URL through the real PgBouncer: as the local stack's services have it (its Unix
    socket), as compose's have it (TCP, sslmode and gssencmode disabled): both watch the socket
    from the first wait to the last; and TCP without those options (libpq could fall back to a
    second socket: each wait watches its own)."""
    if request.param == "unix socket":
        url = make_url(shop_db.bouncer_url("users"))
    else:
        url = make_url(shop_db.bouncer_tcp_url("users"))
    if request.param == "libpq may reconnect":
        url = url.difference_update_query(["sslmode", "gssencmode"])
    engine = make_engine(url.render_as_string(hide_password=False))
    assert fetch_one(make_reader(engine), "SELECT 1", {}) == (1,)  # sets the engine up
    target = _UNPOOLED[engine.pool].loop_target
    assert target is not None
    assert target.one_socket is (request.param != "libpq may reconnect")
    yield engine
    engine.dispose()


def _threads_of_connects(engine: Engine) -> list[int]:
    """The thread each new connection of `engine` is made in, from now on."""
    threads: list[int] = []
    event.listen(engine, "connect", lambda *_: threads.append(threading.get_ident()))
    return threads


def test_the_same_rows_as_fetch_one_on_the_loops_thread_with_listeners_and_count(
    bouncer: Engine, run: Runner[Any]
) -> None:
    reader = make_reader(bouncer)
    threads = _threads_of_connects(bouncer)
    sql = "SELECT current_user, %(n)s::int + 1, pg_backend_pid() IS NOT NULL"

    async def five_at_once() -> list[Any]:
        return await asyncio.gather(*(fetch_one_async(reader, sql, {"n": n}) for n in range(5)))

    with count_queries(bouncer) as statements:
        rows = run(five_at_once())

    assert rows == [("users_svc", n + 1, True) for n in range(5)]
    assert rows[0] == fetch_one(reader, sql, {"n": 0})
    assert statements.value == 5
    assert threads[:5] == [threading.get_ident()] * 5  # the loop's own thread: no worker thread
    assert run(fetch_one_async(reader, "SELECT 1 WHERE false", {})) is None


def test_errors_are_sqlalchemys_and_leave_no_connection(scratch_db: str, run: Runner[Any]) -> None:
    engine = make_engine(scratch_db)  # direct: its backends can be seen
    reader = make_reader(engine)
    assert fetch_one(reader, "SELECT 1", {}) == (1,)
    marker = f"/* {uuid.uuid4()} */"

    with pytest.raises(DataError):
        run(fetch_one_async(reader, f"SELECT 1 / %(zero)s {marker}", {"zero": 0}))
    with pytest.raises(ProgrammingError):
        run(fetch_one_async(reader, f"SELEC 1 {marker}", {}))

    _wait_for(lambda: _backends_that_ran(engine, marker) == 0)
    assert run(fetch_one_async(reader, "SELECT 7", {})) == (7,)
    engine.dispose()


def test_before_the_first_login_and_on_a_pooled_engine_it_runs_in_a_thread(
    scratch_db: str, run: Runner[Any]
) -> None:
    fresh = make_engine(scratch_db)
    pooled = make_engine(scratch_db, pool_size=1)
    fresh_threads, pooled_threads = _threads_of_connects(fresh), _threads_of_connects(pooled)

    assert run(fetch_one_async(make_reader(fresh), "SELECT 1", {})) == (1,)
    assert run(fetch_one_async(make_reader(fresh), "SELECT 2", {})) == (2,)
    assert run(fetch_one_async(make_reader(pooled), "SELECT 3", {})) == (3,)

    main = threading.get_ident()
    assert fresh_threads[0] != main  # the engine's first login: the dialect's setup, in a thread
    assert fresh_threads[1] == main  # then on the loop
    assert pooled_threads[0] != main  # a QueuePool lends its connections to threads
    fresh.dispose()
    pooled.dispose()


class _Gate:
    """A TCP listener in front of a real server: it forwards connections while open, and accepts
    and then says nothing once closed (a hung PgBouncer)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.open = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.open:
                self._held.append(client)
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        if self._listener.fileno() >= 0:
            self._listener.shutdown(socket.SHUT_RDWR)  # stops listening (and wakes accept())
            self._listener.close()
        for held in self._held:
            held.close()


@pytest.fixture
def gate(shop_db: ShopDatabase) -> Iterator[tuple[_Gate, Engine]]:
    url = make_url(shop_db.bouncer_tcp_url("users"))
    assert url.host is not None
    assert url.port is not None
    gate = _Gate(url.host, url.port)
    engine = make_engine(
        url.set(host="127.0.0.1", port=gate.port).render_as_string(hide_password=False),
        connect_args={"connect_timeout": 1},
    )
    assert fetch_one(make_reader(engine), "SELECT 1", {}) == (1,)  # through the open gate
    yield gate, engine
    engine.dispose()
    gate.close()


def test_a_server_that_stops_answering_is_a_503_after_the_login_deadline(
    gate: tuple[_Gate, Engine], run: Runner[Any]
) -> None:
    proxy, engine = gate
    proxy.open = False
    started = time.monotonic()

    with pytest.raises(OperationalError, match="TimeoutError"):
        run(fetch_one_async(make_reader(engine), "SELECT 1", {}))

    assert 0.9 < time.monotonic() - started < 3  # connect_timeout=1, not libpq's forever


def test_a_refused_login_is_a_503_at_once(gate: tuple[_Gate, Engine], run: Runner[Any]) -> None:
    proxy, engine = gate
    proxy.close()  # nothing listens on the port any more
    started = time.monotonic()

    with pytest.raises(OperationalError, match="refused"):
        run(fetch_one_async(make_reader(engine), "SELECT 1", {}))

    assert time.monotonic() - started < 0.5


def test_a_statement_past_its_deadline_is_a_503(
    bouncer: Engine, run: Runner[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop_common.db, "STATEMENT_DEADLINE_SECONDS", 0.3)
    started = time.monotonic()

    with pytest.raises(OperationalError, match="TimeoutError"):
        run(fetch_one_async(make_reader(bouncer), "SELECT pg_sleep(2)", {}))

    assert time.monotonic() - started < 1.5


def test_no_more_connections_at_once_than_the_bound(
    scratch_db: str, run: Runner[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop_common.db, "MAX_LOOP_CONNECTIONS", 2)
    engine = make_engine(scratch_db, connect_args={"connect_timeout": 1})
    reader = make_reader(engine)
    assert fetch_one(reader, "SELECT 1", {}) == (1,)
    marker = f"/* {uuid.uuid4()} */"
    seen: list[int] = []

    async def five_then_count() -> list[Any]:
        reads = [fetch_one_async(reader, f"SELECT pg_sleep(0.6), 1 {marker}", {}) for _ in range(5)]
        tasks = [asyncio.ensure_future(read) for read in reads]
        while not all(task.done() for task in tasks):
            seen.append(_backends_that_ran(engine, marker))  # blocking: between loop turns
            await asyncio.sleep(0.1)
        return [task.exception() or task.result() for task in tasks]

    results = run(five_then_count())

    assert max(seen) == 2
    assert [type(r) for r in results[:2]] == [tuple, tuple]  # the first two, at once
    # A login waits for a slot within its connect_timeout (1 s): the third and fourth got one
    # after 0.6 s; the fifth would have got one after 1.2 s, past its deadline: a 503.
    assert [type(r) for r in results] == [tuple, tuple, tuple, tuple, OperationalError]
    engine.dispose()


def test_a_cancelled_read_closes_its_connection(scratch_db: str, run: Runner[Any]) -> None:
    engine = make_engine(scratch_db)  # direct: its backends can be seen
    reader = make_reader(engine)
    assert fetch_one(reader, "SELECT 1", {}) == (1,)
    marker = f"/* {uuid.uuid4()} */"

    async def cancel_midway() -> None:
        task = asyncio.ensure_future(fetch_one_async(reader, f"SELECT pg_sleep(1) {marker}", {}))
        await asyncio.sleep(0.3)
        assert _backends_that_ran(engine, marker) == 1  # (a blocking query: the loop waits)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancel_midway())
    _wait_for(lambda: _backends_that_ran(engine, marker) == 0)  # it ends with its sleep
    engine.dispose()


def test_a_host_name_is_looked_up_off_the_loop_and_given_as_hostaddr(
    shop_db: ShopDatabase, run: Runner[Any]
) -> None:
    url = make_url(shop_db.bouncer_tcp_url("users"))
    engine = make_engine(url.set(host="localhost").render_as_string(hide_password=False))
    reader = make_reader(engine)
    assert fetch_one(reader, "SELECT 1", {}) == (1,)
    target = _UNPOOLED[engine.pool].loop_target
    assert target is not None

    assert run(fetch_one_async(reader, "SELECT current_user", {})) == ("users_svc",)
    dsn = run(target.dsn())
    assert "host=localhost" in dsn
    assert "hostaddr=" in dsn
    engine.dispose()


@pytest.mark.parametrize(
    ("params", "environ", "expected"),
    [
        ({"host": "127.0.0.1", "sslmode": "disable", "gssencmode": "disable"}, {}, (False, True)),
        ({"host": "db.internal", "sslmode": "disable", "gssencmode": "disable"}, {}, (True, True)),
        ({"host": "/run/postgresql"}, {}, (False, True)),  # a Unix socket: no TLS, no GSS
        ({"host": "/run/pg", "sslmode": "prefer"}, {"PGGSSENCMODE": "prefer"}, (False, True)),
        ({"host": "db", "sslmode": "verify-full"}, {"PGGSSENCMODE": "disable"}, (True, True)),
        ({"host": "db", "hostaddr": "10.0.0.5", "sslmode": "require"}, {}, (False, False)),
        ({"host": "a,b"}, {}, None),  # several hosts: libpq's failover, in a thread
        ({"host": "a", "hostaddr": "10.0.0.1,10.0.0.2"}, {}, None),
        ({}, {"PGHOST": "db"}, None),
    ],
)
def test_which_logins_run_on_the_loop_and_how(
    params: dict[str, str],
    environ: dict[str, str],
    expected: tuple[bool, bool] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(needs a lookup, one socket), or None: not on the loop."""
    for name in ("PGHOST", "PGHOSTADDR", "PGSSLMODE", "PGGSSENCMODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    target = _LoopTarget.of("dbname=x", params)

    if expected is None:
        assert target is None
    else:
        assert target is not None
        needs_lookup = run_dsn(target) != "dbname=x"
        assert (needs_lookup, target.one_socket) == expected


def run_dsn(target: _LoopTarget) -> str:
    async def lookup() -> str:
        try:
            return await target.dsn()
        except OSError:  # the name does not resolve here: it was looked up all the same
            return "looked up"

    return asyncio.run(lookup())


def _backends_that_ran(engine: Engine, marker: str) -> int:
    """Backends (still connected) whose last statement carried `marker`."""
    with engine.connect() as connection:
        count: int = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND strpos(query, %(marker)s) > 0",
            {"marker": marker},
        ).scalar_one()
    return count


def _wait_for(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
