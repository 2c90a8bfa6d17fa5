"""Engine factory and the request-scoped session that owns the transaction."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from weakref import WeakKeyDictionary

import psycopg2
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE, make_dsn
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, Pool
from sqlalchemy.sql.elements import ClauseElement

from shop_common.errors import Describer, Description, describe_internal_error

# Constraint names are fixed by convention, so services can translate IntegrityError by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_engine(url: str, pool_size: int = 0, **kwargs: Any) -> Engine:
    """pool_size 0 (the default, and the design's choice): NullPool, PgBouncer does the pooling, so
    every checkout is a fresh client login to it; no pool_pre_ping, a connection is never reused.

    pool_size > 0: a small in-process QueuePool of that many connections (no overflow, pre-ping),
    meant for a DIRECT PostgreSQL URL. It exists so bench/ can compare both in one run; through
    PgBouncer's transaction pooling a long-lived pool gains nothing."""
    # Fail fast instead of hanging on an unreachable host (libpq waits forever by default).
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    if pool_size > 0:
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True, **kwargs
        )
    else:
        engine = create_engine(url, poolclass=NullPool, **kwargs)
    if engine.dialect.driver == "psycopg2":
        _connect_with_one_dsn(engine)
    return engine


class _OneDsn:
    """The engine's `do_connect`: psycopg2.connect(**params) quotes and joins every parameter into
    a DSN on each call (40 µs measured; with NullPool that is every transaction). The parameters
    never change, so the DSN is built on the first connect and reused: psycopg2 then only checks it
    (5 µs). Once built, fetch_one opens NullPool connections with it directly (`connect`).

    The password goes to libpq in a pgpass file held in memory (`_memory_passfile`), not in the
    DSN: for a DSN with a password psycopg2 rebuilds a password-obscured copy on every connect
    (another 40 µs; libpq reading the file costs a few)."""

    def __init__(self) -> None:
        self.dsn: str | None = None
        self._passfile: _MemoryFile | None = None
        # A fresh worker's first requests connect at once, each in its own thread: one builds the
        # DSN and the passfile, the others wait for it. (Each building its own replaced, and so
        # closed, a passfile another login was about to read: "no password supplied".)
        self._building = threading.Lock()
        # fetch_one_async's: where to connect without libpq resolving a name (None: it cannot, so
        # it runs fetch_one in a thread), and whether the first connection's setup has run.
        self.loop_target: _LoopTarget | None = None
        self.set_up = False

    def __call__(
        self, dialect: Any, _record: object, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        dsn = self.dsn
        if dsn is None:
            with self._building:
                dsn = self.dsn
                if dsn is None:
                    dsn = self._build(cargs, cparams)
        return dialect.loaded_dbapi.connect(dsn)

    def _build(self, cargs: tuple[Any, ...], cparams: dict[str, Any]) -> str:
        params = dict(cparams)
        password = params.get("password")
        if isinstance(password, str) and "passfile" not in params:
            self._passfile = _memory_passfile(password)
            if self._passfile is not None:
                del params["password"]
                params["passfile"] = self._passfile.path
        dsn: str = make_dsn(*cargs, **params)
        self.loop_target = _LoopTarget.of(dsn, params)
        self.dsn = dsn  # last: a login that finds it finds everything else ready
        return dsn

    def first_set_up(self, _connection: Any, _record: object) -> None:
        """A pool `connect` listener (once, after the dialect's): the dialect's per-connection
        setup has run on a connection (its first run may query the server, which a connection
        on the event loop cannot do), so fetch_one_async may open its own."""
        self.set_up = True

    @staticmethod
    def connect(dsn: str, pool: Pool) -> Any:
        """A connection as `pool` would make it (its `connect` listeners run: the dialect's
        per-connection setup, and any a test added), without the pool's bookkeeping."""
        # The connection class itself: psycopg2.connect() would parse the DSN again to check it
        # (it was checked when built), 15 µs a login.
        connection = psycopg2.extensions.connection(dsn)
        _set_up(connection, pool)
        return connection


@dataclass(frozen=True)
class _MemoryFile:
    fd: int
    path: str


def _memory_passfile(password: str) -> _MemoryFile | None:
    """A pgpass file that exists only in this process's memory (Linux memfd, mode 0600 as libpq
    requires, gone with the process or when the engine is collected), read by libpq through
    /proc/self/fd. None where there is no memfd (the password then stays in the DSN)."""
    if not hasattr(os, "memfd_create") or "\n" in password or "\r" in password:
        return None
    fd = os.memfd_create("shop-pgpass")  # close-on-exec
    os.fchmod(fd, 0o600)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    os.write(fd, f"*:*:*:*:{escaped}\n".encode())
    file = _MemoryFile(fd, f"/proc/self/fd/{fd}")
    weakref.finalize(file, os.close, fd)
    return file


# NullPool engines made by make_engine → their DSN; fetch_one's unpooled path (weak: tests make
# and drop many engines).
_UNPOOLED: WeakKeyDictionary[Pool, _OneDsn] = WeakKeyDictionary()


def _connect_with_one_dsn(engine: Engine) -> None:
    one_dsn = _OneDsn()
    event.listen(engine, "do_connect", one_dsn)
    if isinstance(engine.pool, NullPool):
        _UNPOOLED[engine.pool] = one_dsn
        event.listen(engine.pool, "connect", one_dsn.first_set_up, once=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_reader(engine: Engine) -> Engine:
    """The same engine (same pool, same URL) with AUTOCOMMIT: each statement is its own
    transaction, so a one-statement read costs one round trip instead of three (BEGIN, SELECT,
    COMMIT) in the service, in PgBouncer and in PostgreSQL. Setting it is a client-side flag."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


_DIALECT = PGDialect_psycopg2()  # type: ignore[no-untyped-call]


def compiled_sql(statement: ClauseElement) -> str:
    """A Core statement compiled once, at import, to psycopg2's SQL text with named `%(name)s`
    parameters; run it with `connection.exec_driver_sql(sql, {"name": value})`. For hot paths:
    skips the cache-key walk and the cache lookup SQLAlchemy does on every `execute()`. Results
    come back as the driver's types (Decimal, aware datetime, UUID), which the Core types would not
    change for these columns; bind parameters must be named with `bindparam("name")`."""
    return str(statement.compile(dialect=_DIALECT))


def _session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory.begin() as session:  # commits on normal exit, rolls back on an exception
        yield session


# The two ways a request handler owns database work (CONTRIBUTING.md, "Owning a transaction"):
#
# SessionDep: one request, one transaction. The commit runs after the handler returns and BEFORE
# the response is sent (scope="function"), so a failing commit becomes an error response instead
# of a 200 for data that was not stored; an error rolls it back. The default for every handler.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


async def _transaction_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    return factory


# TransactionFactoryDep: the handler (or the service function it passes the factory to) opens
# `with factory.begin() as session:` itself, once per step. For paths that must commit on their own
# schedule: between calls to another service (order placement, cancellation: never a transaction
# held across HTTP), before answering an error (a refresh token's family revoked, then 400), or in
# the handler's own thread because the rows it locks are hot (catalog's reservations: with
# SessionDep the commit needs a second threadpool hop, which cannot start while every worker thread
# waits on the same row lock).
TransactionFactoryDep = Annotated[sessionmaker[Session], Depends(_transaction_factory)]


# What fetch_one answers: the first row as a tuple, or None when the statement returned none.
FirstRow = tuple[Any, ...] | None


def fetch_one(reader: Engine, sql: str, params: Mapping[str, Any]) -> FirstRow:
    """The first row of ONE statement (`compiled_sql` text) run in autocommit on a fresh connection
    of `reader`'s engine, or None. The hottest paths' way (GET /products/{id}, GET /users/me, the
    order's writes): SQLAlchemy's Connection around a statement (events, isolation
    characteristics, transaction bookkeeping, result wrapping) cost about 0.2 ms of CPU per call,
    as much as the query. This does by hand what the reader engine does: autocommit (no
    BEGIN/COMMIT), and driver errors raised as SQLAlchemy's, so an unreachable database is still
    the central 503 and a constraint still an IntegrityError. The engine's `before_cursor_execute`
    listeners still see the statement (with no Connection and no context), so `count_queries`
    counts it.

    With NullPool (make_engine's default) the connection is opened with the engine's DSN and
    closed here: the pool would only wrap and close it (its checkout, reset and check-in cost
    50 µs of CPU per call, bench/connect_cost.py). A pooled engine (pool_size > 0) lends one of
    its connections, reset to the state the pool hands out before it goes back."""
    one_dsn = _UNPOOLED.get(reader.pool)
    if one_dsn is not None and one_dsn.dsn is not None:
        return _fetch_unpooled(reader, one_dsn.dsn, sql, params)
    return _fetch_pooled(reader, sql, params)


def _fetch_unpooled(reader: Engine, dsn: str, sql: str, params: Mapping[str, Any]) -> FirstRow:
    try:
        connection = _OneDsn.connect(dsn, reader.pool)  # a fresh PgBouncer login, closed below
    except psycopg2.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg2.Error, dialect=reader.dialect) from exc
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            return _first_row(reader, cursor, sql, params)
    except psycopg2.Error as exc:
        raise DBAPIError.instance(sql, params, exc, psycopg2.Error, dialect=reader.dialect) from exc
    finally:
        connection.close()


def _fetch_pooled(reader: Engine, sql: str, params: Mapping[str, Any]) -> FirstRow:
    dbapi_error: type[Exception] = reader.dialect.loaded_dbapi.Error
    try:
        connection = reader.raw_connection()  # the first NullPool connect builds the DSN
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=reader.dialect) from exc
    driver: Any = connection.driver_connection  # psycopg2's connection
    try:
        driver.autocommit = True
        cursor = connection.cursor()
        row = _first_row(reader, cursor, sql, params)
        cursor.close()
        driver.autocommit = False  # as a pool hands a connection out
    except dbapi_error as exc:
        connection.invalidate(exc)  # never back into a pool in an unknown state
        raise DBAPIError.instance(sql, params, exc, dbapi_error, dialect=reader.dialect) from exc
    finally:
        connection.close()
    return row


def _set_up(connection: Any, pool: Pool) -> None:
    """What `pool` does with a connection it made: its `connect` listeners (the dialect's
    per-connection setup, and any a test added; the first-connect one ran on the first)."""
    for listener in pool.dispatch.connect:
        listener(connection, None)


def _announce(reader: Engine, cursor: Any, sql: str, params: Mapping[str, Any]) -> None:
    """The engine's `before_cursor_execute` listeners (none in production; count_queries), with
    no Connection and no context, as fetch_one and fetch_one_async run a statement without them."""
    for listener in reader.dispatch.before_cursor_execute:
        listener(None, cursor, sql, params, None, False)


def _first_row(reader: Engine, cursor: Any, sql: str, params: Mapping[str, Any]) -> FirstRow:
    _announce(reader, cursor, sql, params)
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else tuple(row)


# fetch_one_async's deadline for the statement, after the login (the login's is the engine's
# connect_timeout). A backstop: the roles' statement_timeout (5 s) and PgBouncer's
# query_wait_timeout (10 s) end a slow statement first; this ends the wait on a server that went
# silent.
STATEMENT_DEADLINE_SECONDS = 15.0

# fetch_one_async's bound: connections it holds at once per event loop (one loop per worker
# process), the same bound the threadpool puts on the threaded paths (anyio's 40 threads). A
# login waits for a slot within its own deadline (connect_timeout), then it is the 503 of a login
# that failed.
MAX_LOOP_CONNECTIONS = 40
_LOOP_SLOTS: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


def _slots(loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
    slots = _LOOP_SLOTS.get(loop)
    if slots is None:
        slots = _LOOP_SLOTS[loop] = asyncio.Semaphore(MAX_LOOP_CONNECTIONS)
    return slots


async def fetch_one_async(reader: Engine, sql: str, params: Mapping[str, Any]) -> FirstRow:
    """fetch_one for an async handler, with no thread: the login and the statement run on a
    non-blocking psycopg2 connection whose socket the event loop watches, so a request that does
    nothing else holds no worker thread and costs no thread switches (GET /users/me, GET
    /products/{id}; docs/PERFORMANCE.md). The same contract as fetch_one: one statement in
    autocommit on a fresh connection of a NullPool engine, the pool's `connect` and the engine's
    `before_cursor_execute` listeners run, errors raised as SQLAlchemy's. At most
    MAX_LOOP_CONNECTIONS of these hold a connection at once per event loop. Every wait has a
    deadline: the engine's connect_timeout for a slot and the login, then
    STATEMENT_DEADLINE_SECONDS for the statement; past it, an OperationalError (the central 503).

    For reads, and for writes whose caller resolves an unknown outcome: a write whose deadline
    passes may still commit (catalog's one-product reservation: orders takes its 503 as "maybe
    reserved"). Where this cannot run on the loop it runs fetch_one in the threadpool: a pooled
    engine, before the engine's first connection has been set up, or a URL with several hosts."""
    one_dsn = _UNPOOLED.get(reader.pool)
    target = None if one_dsn is None or not one_dsn.set_up else one_dsn.loop_target
    if target is None:
        return await run_in_threadpool(fetch_one, reader, sql, params)
    dialect = reader.dialect
    loop = asyncio.get_running_loop()
    slots = _slots(loop)
    watch = _Watch(loop, target.one_socket)
    connection: Any = None
    statement: str | None = None  # None until logged in: a failed login ran no statement
    slot = False
    try:
        async with asyncio.timeout(target.connect_timeout) as deadline:
            slot = await slots.acquire()
            connection = psycopg2.extensions.connection(await target.dsn(), async_=True)
            await watch.ready(connection)
            statement = sql
            deadline.reschedule(loop.time() + STATEMENT_DEADLINE_SECONDS)
            _set_up(connection, reader.pool)
            cursor = connection.cursor()
            _announce(reader, cursor, sql, params)
            cursor.execute(sql, params)
            await watch.ready(connection)
            row = cursor.fetchone()
        return None if row is None else tuple(row)
    except (psycopg2.Error, OSError, TimeoutError) as exc:
        if statement is None:
            target.forget()  # the next login looks the host up again: it may have moved
        error = (
            exc
            if isinstance(exc, psycopg2.Error)  # a failed lookup, a deadline that passed:
            else psycopg2.OperationalError(f"{type(exc).__name__}: {exc}")
        )
        shown = None if statement is None else params  # a failed login ran nothing
        raise DBAPIError.instance(statement, shown, error, psycopg2.Error, dialect=dialect) from exc
    finally:
        watch.stop()
        if connection is not None:
            connection.close()
        if slot:
            slots.release()


class _Watch:
    """The event loop's watch on one connection's socket, waking the coroutine that drives it.

    Each add_reader/remove_reader pair costs the loop about five syscalls (uvloop checks the fd
    and makes it non-blocking first), and a login and a statement wait four or five times. When
    libpq keeps one socket for the whole login (`one_socket`) the socket is watched for reading
    from the first wait to the end, and for writing only while libpq waits to write. Otherwise
    (libpq may close its socket and open another, with the same number, while it logs in) each
    wait adds and removes its own watch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, one_socket: bool) -> None:
        self._loop = loop
        self._one_socket = one_socket
        self._reading: int | None = None  # the fd watched for reading
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def ready(self, connection: Any) -> None:
        """Drive psycopg2's poll() until the connection is idle."""
        loop = self._loop
        while (state := connection.poll()) != POLL_OK:
            fd = connection.fileno()
            if self._reading != fd:
                self.stop()
                loop.add_reader(fd, self._wake)
                self._reading = fd
            self._waiter = waiter = loop.create_future()
            if state == POLL_WRITE:
                loop.add_writer(fd, self._wake)
                try:
                    await waiter
                finally:
                    loop.remove_writer(fd)
            elif state == POLL_READ:
                await waiter
            else:  # pragma: no cover - poll() raises rather than answer anything else
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            if not self._one_socket:
                self.stop()

    def stop(self) -> None:
        if self._reading is not None:
            self._loop.remove_reader(self._reading)
            self._reading = None


class _LoopTarget:
    """Where fetch_one_async logs in. libpq looks a host name up inside PQconnectPoll, blocking
    the event loop for as long as the resolver takes, so a name is looked up here, off the loop
    (the loop's getaddrinfo), at most once per RESOLVE_SECONDS and again after a failed login,
    and given to libpq as `hostaddr` (the name stays `host`, for TLS verification). An address,
    a Unix socket directory or no host at all needs no lookup."""

    RESOLVE_SECONDS = 10.0

    def __init__(
        self, dsn: str, host: str | None, port: int, connect_timeout: float, one_socket: bool
    ) -> None:
        self._dsn = dsn
        self._host = host  # None: nothing to look up
        self._port = port
        self.connect_timeout = connect_timeout
        self.one_socket = one_socket  # see _Watch
        self._resolved: str | None = None if host else dsn
        self._expires = 0.0

    @classmethod
    def of(cls, dsn: str, params: Mapping[str, Any]) -> _LoopTarget | None:
        """None where libpq must choose among hosts itself (several, or from PGHOST)."""
        host = params.get("host")
        hostaddr = params.get("hostaddr")
        if host is not None and not isinstance(host, str):
            return None
        if not host and (os.environ.get("PGHOST") or os.environ.get("PGHOSTADDR")):
            return None
        if (host and "," in host) or (isinstance(hostaddr, str) and "," in hostaddr):
            return None
        timeout = float(params.get("connect_timeout") or 0) or 30.0  # libpq's 0 waits forever
        # libpq opens a second socket only to fall back from TLS or GSS encryption to plain, and
        # tries neither over a Unix socket (a host naming a directory).
        ssl = params.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"
        gss = params.get("gssencmode") or os.environ.get("PGGSSENCMODE") or "prefer"
        unix = host is not None and host.startswith("/") and not hostaddr
        one_socket = unix or (
            ssl in {"disable", "require", "verify-ca", "verify-full"} and gss == "disable"
        )
        if not host or unix or hostaddr or _is_address(host):
            return cls(dsn, None, 0, timeout, one_socket)
        return cls(dsn, host, int(params.get("port") or 5432), timeout, one_socket)

    async def dsn(self) -> str:
        if self._host is None:
            return self._dsn
        if self._resolved is not None and time.monotonic() < self._expires:
            return self._resolved
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        if not found:
            raise OSError(f"no address for {self._host}")
        address = str(found[0][4][0])
        self._resolved = make_dsn(self._dsn, hostaddr=address)
        self._expires = time.monotonic() + self.RESOLVE_SECONDS
        return self._resolved

    def forget(self) -> None:
        if self._host is not None:
            self._resolved = None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


# EngineDep: the engine, for a Core transaction the handler opens in its own thread (`with
# engine.begin() as connection:`), for TransactionFactoryDep's reasons but without an ORM Session
# on a hot path: catalog's reservation endpoint.
EngineDep = Annotated[Engine, Depends(_engine)]


async def _reader(request: Request) -> Engine:
    engine: Engine = request.app.state.reader
    return engine


# ReaderDep: an AUTOCOMMIT engine (make_reader) for work that is ONE statement: a SELECT (it sees
# one snapshot, so it needs no transaction around it), or a single write statement (INSERT ...
# RETURNING, a data-modifying CTE: a statement is its own transaction, just as atomic). `with
# reader.connect() as connection:` in a sync handler is one threadpool hop and one round trip.
# Anything that runs two statements that must agree or commit together uses one of the two above.
ReaderDep = Annotated[Engine, Depends(_reader)]


def constraint_name(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return name if isinstance(name, str) else None


@dataclass
class QueryCounter:
    value: int = 0


@contextmanager
def count_queries(engine: Engine) -> Iterator[QueryCounter]:
    """Count SQL statements executed on `engine` inside the block (tests assert no N+1)."""
    counter = QueryCounter()

    def _before(*_args: object, **_kwargs: object) -> None:
        counter.value += 1

    event.listen(engine, "before_cursor_execute", _before)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", _before)


def describe_database_error(exc: Exception) -> Description:
    """The problem for a database error no service translated (installed by build_service_app)."""
    match exc:
        case IntegrityError():  # a constraint the service did not translate: still the client's conflict
            return (
                409,
                "Conflict",
                {
                    "type": "/problems/constraint-violation",
                    "detail": "The request conflicts with existing data.",
                },
            )
        case DataError():  # a value the column cannot hold
            return (
                422,
                "Invalid value",
                {
                    "type": "/problems/invalid-value",
                    "detail": "A value is out of range for its field.",
                },
            )
        case OperationalError():
            return (
                503,
                "Database unavailable",
                {
                    "type": "/problems/database-unavailable",
                    "detail": "The database cannot be reached; retry later.",
                },
            )
        case _:
            return describe_internal_error(exc)


DATABASE_PROBLEMS: dict[type[Exception], Describer] = {SQLAlchemyError: describe_database_error}
