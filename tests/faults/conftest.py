"""Fault tests: the real stack (processes), faults injected from outside, and the stock invariant
of DESIGN §5 checked in the databases at the end of every test.

Tokens are minted with the harness key (users signs with the same key), so no test spends the
login rate limit. Every test makes its own buyer (random user id: orders trusts the token) and its
own products, and asserts on exactly those rows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from orders.config import OrdersSettings
from shop_dev.stack import free_port
from shop_dev.testing import RunningStack, ShopDatabase, TestKeys

LIVE_STATUSES = ("pending", "confirmed", "shipped", "delivered")
# Orders gives up on one catalog call after (retries + 1) * (connect + read) + backoff: 3.1 s here
# instead of the default 12.3 s, so the timeout path is quick to test.
FAST_CATALOG_TIMEOUTS = {
    "CATALOG_READ_TIMEOUT_SECONDS": "1.0",
    "CATALOG_CONNECT_TIMEOUT_SECONDS": "0.5",
    "CATALOG_RETRIES": "1",
    "CATALOG_BACKOFF_SECONDS": "0.1",
}
CATALOG_CALL_BOUND_SECONDS = 2 * (0.5 + 1.0) + 0.1


# ---- database views -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin_engine(shop_db: ShopDatabase) -> Iterator[Engine]:
    engine = create_engine(shop_db.admin_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@dataclass
class Ledger:
    """Stock and orders as the databases see them (superuser, direct: no PgBouncer)."""

    engine: Engine

    def stock(self, product_ids: list[int]) -> dict[int, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    """
                    SELECT p.id,
                           p.stock_quantity AS available,
                           coalesce(sum(ri.quantity) FILTER (WHERE r.status = 'held'), 0) AS held,
                           coalesce(sum(ri.quantity) FILTER (WHERE r.status = 'committed'), 0)
                               AS committed
                    FROM catalog.products p
                    LEFT JOIN catalog.reservation_items ri ON ri.product_id = p.id
                    LEFT JOIN catalog.reservations r ON r.id = ri.reservation_id
                    WHERE p.id = ANY(:ids)
                    GROUP BY p.id
                    """
                ),
                {"ids": product_ids},
            ).all()
        return {
            r.id: {"available": r.available, "held": r.held, "committed": r.committed} for r in rows
        }

    def orders(self, user_id: int) -> list[dict[str, Any]]:
        """The user's orders with the status of their reservation in catalog (None: never seen)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    """
                    SELECT o.id, o.status, o.idempotency_key, o.reservation_id,
                           o.total_amount, r.status AS reservation_status
                    FROM orders.orders o
                    LEFT JOIN catalog.reservations r ON r.id = o.reservation_id
                    WHERE o.user_id = :user_id
                    ORDER BY o.id
                    """
                ),
                {"user_id": user_id},
            ).mappings()
            return [dict(r) for r in rows]

    def committed_by_orders(self, user_ids: list[int]) -> dict[int, int]:
        """Quantity per product in the live (placed, not cancelled) orders of these users."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    """
                    SELECT i.product_id, sum(i.quantity) AS quantity
                    FROM orders.order_items i JOIN orders.orders o ON o.id = i.order_id
                    WHERE o.user_id = ANY(:users) AND o.status = ANY(:live)
                    GROUP BY i.product_id
                    """
                ),
                {"users": user_ids, "live": list(LIVE_STATUSES)},
            ).all()
        return {r.product_id: int(r.quantity) for r in rows}

    def assert_invariant(
        self, initial: dict[int, int], user_ids: list[int], *, allow_held: bool = False
    ) -> dict[int, dict[str, int]]:
        """DESIGN §5: initial = available + held + committed for every product; available >= 0;
        no order left `placing`; every live order's reservation is committed and every other
        order's is not; what catalog counts as committed is exactly what the live orders hold.
        `allow_held=False` also says nothing is held any more (nothing stranded)."""
        view = self.stock(list(initial))
        assert set(view) == set(initial)
        for product_id, start in initial.items():
            row = view[product_id]
            assert row["available"] >= 0, (product_id, row)
            assert row["available"] + row["held"] + row["committed"] == start, (product_id, row)
            if not allow_held:
                assert row["held"] == 0, (product_id, row)
        orders = [o for user_id in user_ids for o in self.orders(user_id)]
        assert [o["id"] for o in orders if o["status"] == "placing"] == []
        for order in orders:
            if order["status"] in LIVE_STATUSES:
                assert order["reservation_status"] == "committed", order
            else:
                assert order["reservation_status"] != "committed", order
        by_orders = self.committed_by_orders(user_ids)
        assert {p: view[p]["committed"] for p in initial if view[p]["committed"]} == {
            p: q for p, q in by_orders.items() if p in initial
        }
        return view


@pytest.fixture(scope="session")
def ledger(admin_engine: Engine) -> Ledger:
    return Ledger(admin_engine)


# ---- actors -----------------------------------------------------------------------------------


@dataclass
class Buyer:
    id: int
    token: str
    gateway: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def order(
        self,
        items: list[tuple[int, int]],
        *,
        key: str | None = None,
        timeout: float = 30,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        body = {"items": [{"product_id": p, "quantity": q} for p, q in items]}
        if client is not None:
            return client.post("/orders/", json=body, headers=headers)
        return httpx.post(f"{self.gateway}/orders/", json=body, headers=headers, timeout=timeout)


@pytest.fixture
def buyer(stack: RunningStack, jwt_keys: TestKeys) -> Buyer:
    user_id = random.randint(1_000_000, 2_000_000_000)  # orders trusts the token's subject
    return Buyer(user_id, jwt_keys.token(user_id, f"buyer{user_id}"), stack.url("gateway"))


@pytest.fixture(scope="session")
def catalog_admin(stack: RunningStack, jwt_keys: TestKeys) -> Iterator[httpx.Client]:
    token = jwt_keys.token(1, "admin", is_superuser=True)
    with httpx.Client(
        base_url=stack.url("catalog"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


ProductFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_product(catalog_admin: httpx.Client, jwt_keys: TestKeys) -> ProductFactory:
    def make(stock: int = 10, price: str = "10.00") -> dict[str, Any]:
        sku = f"FAULT-{uuid.uuid4().hex[:12].upper()}"
        body = {"name": f"Fault {sku}", "sku": sku, "price": price, "stock_quantity": stock}
        # A fresh token: the session's client outlives a token's 15 minutes in a long session.
        token = jwt_keys.token(1, "admin", is_superuser=True)
        response = catalog_admin.post(
            "/products/", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 201, response.text
        product: dict[str, Any] = response.json()
        return product

    return make


# ---- recovery and the stack's shape -----------------------------------------------------------


@dataclass
class Recovery:
    stack: RunningStack

    def run(self) -> dict[str, Any]:
        """Both background jobs, now: orders' recovery of `placing` orders (any age) and catalog's
        sweep of expired holds."""
        headers = {"X-Service-Token": self.stack.internal_api_token}
        orders = httpx.post(
            f"{self.stack.url('orders')}/internal/orders/recover",
            params={"older_than_seconds": 0},
            headers=headers,
            timeout=60,
        )
        assert orders.status_code == 200, orders.text
        sweep = httpx.post(
            f"{self.stack.url('catalog')}/internal/reservations/sweep", headers=headers, timeout=60
        )
        assert sweep.status_code == 200, sweep.text
        return {"orders": orders.json(), "catalog": sweep.json()}

    def settle(self, ledger: Ledger, user_ids: list[int], timeout: float = 60) -> None:
        """Run recovery until none of these users' orders is `placing` (a run that finds catalog
        unavailable leaves an order for the next one, as in production)."""
        deadline = time.monotonic() + timeout
        while True:
            self.run()
            orders = [o for user_id in user_ids for o in ledger.orders(user_id)]
            if all(o["status"] != "placing" for o in orders) or time.monotonic() > deadline:
                return
            time.sleep(0.5)


@pytest.fixture
def recovery(stack: RunningStack) -> Recovery:
    return Recovery(stack)


def bring_up(stack: RunningStack, name: str | None = None, timeout: float = 180) -> None:
    """Start `name` (or everything that is down) and wait until it is live. On a loaded machine a
    process can take longer than the harness's 30 s to answer /health/live: keep waiting, bounded
    (start() of a running process only waits again; of a dead one, starts it anew)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if name is None:
                stack.ensure_running()
            else:
                stack.start(name)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def _default_env_value(name: str) -> str:
    """The value the orders service would use without this variable (to undo an override: the
    harness can add variables to a process's environment but not remove them)."""
    info = OrdersSettings.model_fields[name.lower()]
    value = info.default
    return "" if value is None else str(value)


@dataclass
class OrdersEnv:
    """Restart the orders process with overrides; `restore()` puts the original environment back
    (called by the fixture's teardown whatever happened)."""

    stack: RunningStack
    original: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def restart(self, **overrides: str) -> None:
        self.changed |= set(overrides)
        try:
            self.stack.restart("orders", **overrides)
        except RuntimeError:  # slow to come up on a loaded machine: wait longer
            bring_up(self.stack, "orders")

    def restore(self) -> None:
        bring_up(self.stack)
        if not self.changed:
            return
        back = {
            name: self.original[name] if name in self.original else _default_env_value(name)
            for name in self.changed
        }
        try:
            self.stack.restart("orders", **back)
        except RuntimeError:
            bring_up(self.stack, "orders")
        self.changed.clear()


@pytest.fixture
def orders_env(stack: RunningStack) -> Iterator[OrdersEnv]:
    env = OrdersEnv(stack, original=stack.env("orders"))
    try:
        yield env
    finally:
        env.restore()


@pytest.fixture(autouse=True)
def _stack_restored_after_each_test(stack: RunningStack) -> Iterator[None]:
    yield
    bring_up(stack)


# ---- PgBouncer frozen -------------------------------------------------------------------------


class PgBouncerStall:
    """SIGSTOP the stack's PgBouncer (it keeps its sockets; every client waits), SIGCONT it later.
    `resume()` is idempotent and always called by the fixture's teardown."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self._pid: int | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def freeze(self, seconds: float | None = None) -> None:
        """Stop PgBouncer now; with `seconds`, resume it that much later (from a timer thread)."""
        process = self.stack.pgbouncer.process
        if process is None or process.poll() is not None:
            raise RuntimeError("pgbouncer is not running")
        with self._lock:
            self._pid = process.pid
            os.kill(process.pid, signal.SIGSTOP)
            if seconds is not None:
                self._timer = threading.Timer(seconds, self.resume)
                self._timer.daemon = True
                self._timer.start()

    def resume(self) -> None:
        with self._lock:
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGCONT)
                self._pid = None

    def wait_resumed(self, timeout: float = 60) -> None:
        timer = self._timer
        if timer is not None:
            timer.join(timeout)
        self.resume()


@pytest.fixture
def pgbouncer_stall(stack: RunningStack) -> Iterator[PgBouncerStall]:
    stall = PgBouncerStall(stack)
    try:
        yield stall
    finally:
        stall.resume()


# ---- a fault-injecting HTTP proxy -------------------------------------------------------------


@dataclass
class Rule:
    """What the proxy does with requests matching `method` and a path ending in `path_suffix`."""

    method: str
    path_suffix: str
    delay_before_forward: float = 0.0  # the request reaches the upstream late
    delay_before_reply: float = 0.0  # the upstream acted at once; its answer comes back late
    after_reply: Callable[[], None] | None = None  # run (blocking) once the upstream answered
    times: int | None = None  # None: every matching request
    drop_reply: bool = False  # the upstream acted, but its answer never comes: connection reset

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.endswith(self.path_suffix) and self.times != 0


@dataclass
class Seen:
    method: str
    path: str
    status: int


class FaultProxy:
    """HTTP proxy on a free loopback port, in its own thread and event loop. Forwards everything
    to `upstream`; a matching Rule delays the forward or runs an action (e.g. SIGKILL the caller)
    once the upstream has answered. A client that gives up does not cancel the forward."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        # A connection per forward: a pooled one to a catalog that was killed and restarted
        # would fail the next request, a fault no test asked for.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def add_rule(
        self,
        method: str,
        path_suffix: str,
        *,
        delay_before_forward: float = 0.0,
        delay_before_reply: float = 0.0,
        after_reply: Callable[[], None] | None = None,
        times: int | None = None,
        drop_reply: bool = False,
    ) -> Rule:
        rule = Rule(
            method,
            path_suffix,
            delay_before_forward,
            delay_before_reply,
            after_reply,
            times,
            drop_reply,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self._in_flight += 1
        try:
            body = await request.read()
            rule = self._rule_for(request.method, request.path)
            if rule is not None and rule.delay_before_forward:
                await asyncio.sleep(rule.delay_before_forward)
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
            }
            assert self._session is not None
            async with self._session.request(
                request.method, f"{self.upstream}{request.path_qs}", data=body, headers=headers
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                content_type = upstream.headers.get("Content-Type", "application/json")
            with self._lock:
                self.seen.append(Seen(request.method, request.path, status))
            if rule is not None and rule.delay_before_reply:
                await asyncio.sleep(rule.delay_before_reply)
            if rule is not None and rule.after_reply is not None:
                await asyncio.get_running_loop().run_in_executor(None, rule.after_reply)
            if rule is not None and rule.drop_reply and request.transport is not None:
                request.transport.abort()  # as if the upstream died before answering
                raise ConnectionResetError("reply dropped by the fault proxy")
            return web.Response(body=payload, status=status, headers={"Content-Type": content_type})
        finally:
            with self._lock:
                self._in_flight -= 1

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the proxy still has requests in flight")

    def statuses(self, method: str, path_suffix: str) -> list[int]:
        with self._lock:
            return [
                s.status for s in self.seen if s.method == method and s.path.endswith(path_suffix)
            ]

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()


@pytest.fixture(scope="module")
def _proxied_orders(stack: RunningStack) -> Iterator[FaultProxy]:
    """One proxy for a whole module, and orders restarted once to call catalog through it
    (restarts are the slow part of these tests); the original environment is put back after."""
    proxy = FaultProxy(stack.url("catalog"))
    proxy.start()
    env = OrdersEnv(stack, original=stack.env("orders"))
    try:
        env.restart(CATALOG_URL=proxy.url, **FAST_CATALOG_TIMEOUTS)
        yield proxy
    finally:
        env.restore()
        proxy.close()


@pytest.fixture
def catalog_proxy(stack: RunningStack, _proxied_orders: FaultProxy) -> Iterator[FaultProxy]:
    """The module's proxy with no rules; orders calls catalog through it (and is running)."""
    _proxied_orders.reset()
    bring_up(stack)
    yield _proxied_orders
    _proxied_orders.wait_idle()
    _proxied_orders.reset()
    bring_up(stack)  # a test that killed orders: back, still behind the proxy
