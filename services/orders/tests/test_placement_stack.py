"""Order placement across real processes: orders and catalog as uvicorn processes of the test
stack, PgBouncer, PostgreSQL. Every test ends by checking the invariant of DESIGN §5."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shop_dev.testing import RunningStack, TestKeys

if TYPE_CHECKING:
    from conftest import ProductFactory, Stock

pytestmark = pytest.mark.stack


class Customer:
    """A customer of the orders process; requests go through one shared, pooled client."""

    def __init__(self, client: httpx.Client, jwt_keys: TestKeys) -> None:
        self.id = int(uuid.uuid4().int % 2_000_000_000) + 1_000_000
        self._client = client
        self._auth = {"Authorization": f"Bearer {jwt_keys.token(self.id, f'c{self.id}')}"}

    def get(self, url: str, **params: Any) -> httpx.Response:
        return self._client.get(url, params=params, headers=self._auth)

    def patch_status(self, order_id: int, new_status: str) -> httpx.Response:
        return self._client.patch(
            f"/orders/{order_id}/status", params={"new_status": new_status}, headers=self._auth
        )

    def order(self, *lines: tuple[int, int], key: str | None = None) -> httpx.Response:
        return self._client.post(
            "/orders/",
            json={"items": [{"product_id": p, "quantity": q} for p, q in lines]},
            headers=self._auth | ({"Idempotency-Key": key} if key else {}),
        )


@pytest.fixture(scope="module")
def orders_http(stack: RunningStack) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    with httpx.Client(base_url=stack.url("orders"), timeout=30, limits=limits) as client:
        yield client


@pytest.fixture
def customers(orders_http: httpx.Client, jwt_keys: TestKeys) -> list[Customer]:
    return [Customer(orders_http, jwt_keys) for _ in range(50)]


@pytest.fixture
def running(stack: RunningStack) -> Iterator[RunningStack]:
    """For fault tests: whatever the test stopped or killed is brought back afterwards."""
    yield stack
    stack.ensure_running()


def test_happy_path_decrements_stock(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    alice = customers[0]
    lamp = make_product(price="35.50", stock=8)

    response = alice.order((lamp["id"], 3))

    assert response.status_code == 201
    order = response.json()
    assert (order["status"], order["total_amount"]) == ("pending", "106.50")
    assert alice.get(f"/orders/{order['id']}").json() == order
    view = stock.assert_consistent({lamp["id"]: 8}, [alice.id])
    assert view[lamp["id"]] == {"available": 5, "held": 0, "committed": 3}


def test_insufficient_stock_is_409_and_no_order(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    alice = customers[0]
    lamp = make_product(stock=2)

    response = alice.order((lamp["id"], 3))

    assert response.status_code == 409
    assert response.json()["short"][0]["product_id"] == lamp["id"]
    assert alice.get("/orders/").json()["total"] == 0
    stock.assert_consistent({lamp["id"]: 2}, [alice.id])


def test_cancel_restocks(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    alice = customers[0]
    lamp = make_product(stock=6)
    order = alice.order((lamp["id"], 6)).json()
    assert stock.view([lamp["id"]])[lamp["id"]]["available"] == 0

    cancelled = alice.patch_status(order["id"], "cancelled")

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    view = stock.assert_consistent({lamp["id"]: 6}, [alice.id])
    assert view[lamp["id"]] == {"available": 6, "held": 0, "committed": 0}


def test_another_customers_order_is_404(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    alice, mallory = customers[0], customers[1]
    lamp = make_product(stock=3)
    order = alice.order((lamp["id"], 1)).json()

    read = mallory.get(f"/orders/{order['id']}")
    cancel = mallory.patch_status(order["id"], "cancelled")

    assert (read.status_code, cancel.status_code) == (404, 404)
    assert alice.get(f"/orders/{order['id']}").json()["status"] == "pending"
    stock.assert_consistent({lamp["id"]: 3}, [alice.id, mallory.id])


def test_idempotency_replay_and_conflict(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    alice = customers[0]
    lamp = make_product(stock=9)
    key = uuid.uuid4().hex

    first = alice.order((lamp["id"], 2), key=key)
    replay = alice.order((lamp["id"], 2), key=key)
    conflict = alice.order((lamp["id"], 5), key=key)

    assert (first.status_code, replay.status_code, conflict.status_code) == (201, 201, 422)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    view = stock.assert_consistent({lamp["id"]: 9}, [alice.id])
    assert view[lamp["id"]]["available"] == 7


def test_fifty_concurrent_orders_for_the_last_ten_units(
    customers: list[Customer], make_product: ProductFactory, stock: Stock
) -> None:
    lamp = make_product(stock=10)

    with ThreadPoolExecutor(len(customers)) as pool:
        responses = list(pool.map(lambda c: c.order((lamp["id"], 1)), customers))

    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 10 + [409] * 40
    view = stock.assert_consistent({lamp["id"]: 10}, [c.id for c in customers])
    assert view[lamp["id"]] == {"available": 0, "held": 0, "committed": 10}


def test_catalog_stopped_is_503_and_nothing_is_stranded(
    running: RunningStack,
    customers: list[Customer],
    make_product: ProductFactory,
    stock: Stock,
    admin_engine: Engine,
) -> None:
    alice = customers[0]
    lamp = make_product(stock=4)
    running.stop("catalog")
    try:
        started = time.monotonic()
        response = alice.order((lamp["id"], 1))
        elapsed = time.monotonic() - started
    finally:
        running.start("catalog")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/catalog-unavailable"
    assert elapsed < 13.3  # the documented bound for the default settings
    assert alice.get("/orders/").json()["total"] == 0
    assert _statuses(admin_engine, alice.id) == ["failed"]
    stock.assert_consistent({lamp["id"]: 4}, [alice.id])
    assert alice.order((lamp["id"], 1)).status_code == 201


def _statuses(engine: Engine, user_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text("SELECT status FROM orders.orders WHERE user_id = :u ORDER BY id"),
                {"u": user_id},
            )
        )
