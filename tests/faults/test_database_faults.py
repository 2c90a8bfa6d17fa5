"""Database faults under traffic: PgBouncer restarted, and PostgreSQL refusing connections.
Requests must fail fast with 503 problem+json (no hang, no 500) and the services must recover
by themselves (same processes) once the database path is back."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from shop_dev.pgbouncer import PgBouncer
from shop_dev.stack import free_port
from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from faults.conftest import Buyer, Ledger, ProductFactory, Recovery

pytestmark = pytest.mark.stack

SERVICES = ("users", "catalog", "orders", "gateway")
# PgBouncer down: connections are refused at once. PostgreSQL down behind PgBouncer: PgBouncer
# holds the client's login until libpq's connect_timeout (5 s, shop_common.db) gives up.
FAIL_FAST_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
SLACK_SECONDS = 2.0
SCARCE_STOCK = 5


@dataclass(frozen=True)
class Outcome:
    kind: str
    started: float
    ended: float
    status: int
    content_type: str

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)


class Traffic:
    """Threads placing orders (of a plentiful product, and racing for a scarce one) and reading a
    product through the gateway until stopped."""

    def __init__(self, stack: RunningStack, buyer: Buyer, product_id: int, scarce_id: int) -> None:
        self.gateway = stack.url("gateway")
        self.buyer = buyer
        self.product_id = product_id
        self.scarce_id = scarce_id
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), daemon=True)
            for kind in ("order", "order", "scarce", "scarce", "read", "read")
        ]

    def _call(self, kind: str, client: httpx.Client) -> httpx.Response:
        if kind == "order":
            return self.buyer.order([(self.product_id, 1)], client=client)
        if kind == "scarce":
            return self.buyer.order([(self.scarce_id, 1)], client=client)
        return client.get(f"/products/{self.product_id}")

    def _run(self, kind: str) -> None:
        with httpx.Client(base_url=self.gateway, timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                response = self._call(kind, client)
                outcome = Outcome(
                    kind,
                    started,
                    time.monotonic(),
                    response.status_code,
                    response.headers.get("content-type", ""),
                )
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)

    def wait_for(self, predicate: Callable[[list[Outcome]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.outcomes)):
                    return True
            time.sleep(0.05)
        return False

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def _both_kinds_succeed_after(moment: float) -> Callable[[list[Outcome]], bool]:
    def check(outcomes: list[Outcome]) -> bool:
        kinds = {o.kind for o in outcomes if o.started > moment and o.ok}
        return {"order", "read"} <= kinds

    return check


def _both_kinds_answered_after(moment: float) -> Callable[[list[Outcome]], bool]:
    def check(outcomes: list[Outcome]) -> bool:
        return {"order", "scarce", "read"} <= {o.kind for o in outcomes if o.started > moment}

    return check


def _assert_failed_fast_with_problems(outcomes: list[Outcome]) -> None:
    # 202: catalog had committed when the database went away; recovery completes the order
    statuses = {o.status for o in outcomes if o.kind != "scarce"}
    assert statuses <= {200, 201, 202, 503}, sorted(statuses)
    scarce = {o.status for o in outcomes if o.kind == "scarce"}
    assert scarce <= {201, 202, 409, 503}, sorted(scarce)  # 409: sold out
    failures = [o for o in outcomes if o.status >= 400]
    assert {o.content_type for o in failures} <= {"application/problem+json"}
    slowest = max(o.ended - o.started for o in outcomes)
    assert slowest < FAIL_FAST_SECONDS, slowest


def test_pgbouncer_restart_under_load_fails_fast_and_recovers_without_restarts(
    stack: RunningStack,
    buyer: Buyer,
    make_product: ProductFactory,
    ledger: Ledger,
    recovery: Recovery,
) -> None:
    product = make_product(stock=100_000, price="1.00")
    scarce = make_product(stock=SCARCE_STOCK, price="9.00")
    pids = {name: stack.pid(name) for name in SERVICES}

    with Traffic(stack, buyer, product["id"], scarce["id"]) as traffic:
        assert traffic.wait_for(_both_kinds_succeed_after(0), timeout=20)
        stack.pgbouncer.stop()
        outage_started = time.monotonic()
        try:
            assert traffic.wait_for(_both_kinds_answered_after(outage_started), timeout=10)
            time.sleep(0.5)
        finally:
            # PgBouncer serves before start() returns (it polls the port), so the outage ends here.
            restarting = time.monotonic()
            stack.pgbouncer.start()
        back = time.monotonic()
        recovered = traffic.wait_for(_both_kinds_succeed_after(back), timeout=20)
        time.sleep(0.5)
    outcomes = traffic.snapshot()

    assert recovered, "requests did not succeed again after PgBouncer came back"
    during = [o for o in outcomes if o.started > outage_started + 0.1 and o.ended < restarting]
    assert during, "no request was made during the outage"
    assert {o.status for o in during} == {503}
    _assert_failed_fast_with_problems(outcomes)
    settled = [o for o in outcomes if o.started > back + 2.0 and o.kind != "scarce"]
    assert all(o.ok for o in settled), sorted({o.status for o in settled})
    assert {name: stack.pid(name) for name in SERVICES} == pids
    recovery.run()
    view = ledger.assert_invariant({product["id"]: 100_000, scarce["id"]: SCARCE_STOCK}, [buyer.id])
    assert view[scarce["id"]] == {"available": 0, "held": 0, "committed": SCARCE_STOCK}
    assert any(o.kind == "scarce" and o.status == 409 for o in outcomes)  # raced past sold out


def _refusing_bouncer(stack: RunningStack) -> PgBouncer:
    """A PgBouncer on the stack's port and socket whose databases point at a port nobody listens
    on."""
    closed = free_port()
    original = stack.pgbouncer
    databases = {
        name: re.sub(r"port=\d+", f"port={closed}", conn)
        for name, conn in original.databases.items()
    }
    return PgBouncer(
        Path(tempfile.mkdtemp(prefix="shop-refused-")),
        port=original.port,
        databases=databases,
        users=original.users,
        listen_addr=original.host,
        socket_dir=original.socket_dir,  # where the services log in
    )


def test_postgres_refusing_connections_is_a_fast_503_and_recovers(
    stack: RunningStack,
    buyer: Buyer,
    make_product: ProductFactory,
    ledger: Ledger,
    recovery: Recovery,
) -> None:
    product = make_product(stock=10, price="3.00")
    pids = {name: stack.pid(name) for name in SERVICES}
    gateway = stack.url("gateway")
    refusing = _refusing_bouncer(stack)
    timings: dict[str, float] = {}
    answers: dict[str, httpx.Response] = {}

    stack.pgbouncer.stop()
    try:
        refusing.start()
        calls: dict[str, Callable[[], httpx.Response]] = {
            "read": lambda: httpx.get(f"{gateway}/products/{product['id']}", timeout=30),
            "order": lambda: buyer.order([(product["id"], 2)]),
            "ready": lambda: httpx.get(f"{stack.url('catalog')}/health/ready", timeout=30),
        }
        for name, call in calls.items():
            started = time.monotonic()
            answers[name] = call()
            timings[name] = time.monotonic() - started
    finally:
        refusing.stop()
        shutil.rmtree(refusing.workdir, ignore_errors=True)
        stack.pgbouncer.start()

    for name, response in answers.items():
        assert response.status_code == 503, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
    assert "psycopg" not in answers["read"].text
    assert max(timings.values()) < CONNECT_TIMEOUT_SECONDS + SLACK_SECONDS, timings
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        read = httpx.get(f"{gateway}/products/{product['id']}", timeout=30)
        if read.status_code == 200:
            break
        time.sleep(0.2)
    assert read.status_code == 200
    placed = buyer.order([(product["id"], 2)])
    assert placed.status_code == 201, placed.text
    assert {name: stack.pid(name) for name in SERVICES} == pids
    recovery.run()
    view = ledger.assert_invariant({product["id"]: 10}, [buyer.id])
    assert view[product["id"]] == {"available": 8, "held": 0, "committed": 2}
