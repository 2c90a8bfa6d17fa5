"""Orders tests: the orders app in-process (TestClient) against the REAL catalog and users
processes of the test stack, on the shared throwaway database. Every test makes its own users
(random ids: orders trusts the token) and its own products (unique SKUs), and asserts on them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from orders.config import OrdersSettings
from orders.main import create_app
from shop_dev.testing import RunningStack, ShopDatabase, TestKeys


def orders_settings(shop_db: ShopDatabase, stack: RunningStack, **overrides: Any) -> OrdersSettings:
    kwargs: dict[str, Any] = {
        **shop_db.settings_kwargs("orders"),
        "catalog_url": stack.url("catalog"),
        "users_url": stack.url("users"),
        "recovery_interval_seconds": 0,  # tests trigger recovery themselves
    }
    kwargs.update(overrides)
    return OrdersSettings(**kwargs)


@pytest.fixture(scope="session")
def orders_app_client(shop_db: ShopDatabase, stack: RunningStack) -> Iterator[TestClient]:
    with TestClient(create_app(orders_settings(shop_db, stack))) as client:
        yield client


@pytest.fixture(scope="session")
def admin_engine(shop_db: ShopDatabase) -> Iterator[Engine]:
    engine = create_engine(shop_db.admin_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def catalog_admin(stack: RunningStack, jwt_keys: TestKeys) -> Iterator[httpx.Client]:
    token = jwt_keys.token(1, "admin", is_superuser=True)
    with httpx.Client(
        base_url=stack.url("catalog"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="session")
def catalog_internal(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url("catalog"),
        headers={"X-Service-Token": stack.internal_api_token},
        timeout=30,
    ) as client:
        yield client


ProductFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_product(catalog_admin: httpx.Client) -> ProductFactory:
    def make(price: str = "19.99", stock: int = 10, **extra: Any) -> dict[str, Any]:
        sku = f"T-{uuid.uuid4().hex[:12].upper()}"
        body = {"name": f"Product {sku}", "sku": sku, "price": price, "stock_quantity": stock}
        response = catalog_admin.post("/products/", json=body | extra)
        assert response.status_code == 201, response.text
        product: dict[str, Any] = response.json()
        assert Decimal(product["price"]) == Decimal(price)
        return product

    return make


def new_user_id() -> int:
    return random.randint(1_000_000, 2**31 - 1)


class Actor:
    """One authenticated caller of the in-process orders app."""

    def __init__(self, client: TestClient, token: str, user_id: int) -> None:
        self.client = client
        self.id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(
        self, url: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx2.Response:
        return self.client.post(url, json=json, headers=self.headers | (headers or {}))

    def get(self, url: str, params: dict[str, Any] | None = None) -> httpx2.Response:
        return self.client.get(url, params=params, headers=self.headers)

    def patch(self, url: str, params: dict[str, Any] | None = None) -> httpx2.Response:
        return self.client.patch(url, params=params, headers=self.headers)

    def order(self, *lines: tuple[int, int], key: str | None = None) -> httpx2.Response:
        body = {"items": [{"product_id": p, "quantity": q} for p, q in lines]}
        return self.post("/orders/", json=body, headers={"Idempotency-Key": key} if key else None)


ActorFactory = Callable[..., Actor]


@pytest.fixture
def make_actor(orders_app_client: TestClient, jwt_keys: TestKeys) -> ActorFactory:
    def make(is_superuser: bool = False, user_id: int | None = None) -> Actor:
        uid = user_id or new_user_id()
        token = jwt_keys.token(uid, f"user{uid}", is_superuser=is_superuser)
        return Actor(orders_app_client, token, uid)

    return make


@pytest.fixture
def buyer(make_actor: ActorFactory) -> Actor:
    return make_actor()


@pytest.fixture
def admin(make_actor: ActorFactory) -> Actor:
    return make_actor(is_superuser=True)


# ---- the invariant of DESIGN §5, read straight from both services' tables (superuser, direct)


def stock_view(engine: Engine, product_ids: list[int]) -> dict[int, dict[str, int]]:
    """available, held and committed units per product, as catalog sees them."""
    with engine.connect() as conn:
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
        row.id: {"available": row.available, "held": row.held, "committed": row.committed}
        for row in rows
    }


def ordered_units(engine: Engine, product_ids: list[int]) -> dict[int, int]:
    """Units of each product in live orders (pending, confirmed, shipped, delivered)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT i.product_id, sum(i.quantity) AS units
                FROM orders.order_items i JOIN orders.orders o ON o.id = i.order_id
                WHERE i.product_id = ANY(:ids)
                  AND o.status IN ('pending', 'confirmed', 'shipped', 'delivered')
                GROUP BY i.product_id
                """
            ),
            {"ids": product_ids},
        ).all()
    return dict.fromkeys(product_ids, 0) | {row.product_id: row.units for row in rows}


def placing_orders_with(engine: Engine, product_ids: list[int], user_ids: list[int]) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    """
                    SELECT count(*) FROM orders.orders o
                    WHERE o.status = 'placing'
                      AND (o.user_id = ANY(:users) OR EXISTS (
                          SELECT 1 FROM orders.order_items i
                          WHERE i.order_id = o.id AND i.product_id = ANY(:ids)))
                    """
                ),
                {"ids": product_ids, "users": user_ids},
            )
            or 0
        )


def assert_stock_consistent(
    engine: Engine,
    initial: Mapping[int, int],
    user_ids: list[int],
    *,
    allow_held: bool = False,
) -> dict[int, dict[str, int]]:
    """initial stock = available + held + committed for every product; what catalog counts as
    committed is exactly what live orders contain; available >= 0; no order left `placing`.
    Unless allow_held, nothing is held either (no stranded stock)."""
    ids = sorted(initial)
    view = stock_view(engine, ids)
    ordered = ordered_units(engine, ids)
    for pid in ids:
        v = view[pid]
        assert v["available"] >= 0, (pid, v)
        assert initial[pid] == v["available"] + v["held"] + v["committed"], (pid, v)
        assert v["committed"] == ordered[pid], (pid, v, ordered[pid])
        if not allow_held:
            assert v["held"] == 0, (pid, v)
    assert placing_orders_with(engine, ids, user_ids) == 0
    return view


class Stock:
    """The invariant helpers bound to the admin engine (tests cannot import conftest at runtime)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def view(self, product_ids: list[int]) -> dict[int, dict[str, int]]:
        return stock_view(self.engine, product_ids)

    def assert_consistent(
        self, initial: Mapping[int, int], user_ids: list[int], *, allow_held: bool = False
    ) -> dict[int, dict[str, int]]:
        return assert_stock_consistent(self.engine, initial, user_ids, allow_held=allow_held)


@pytest.fixture(scope="session")
def stock(admin_engine: Engine) -> Stock:
    return Stock(admin_engine)


SettingsFactory = Callable[..., OrdersSettings]


@pytest.fixture(scope="session")
def make_settings(shop_db: ShopDatabase, stack: RunningStack) -> SettingsFactory:
    """Settings of an extra in-process orders app, e.g. one aimed at a faulty catalog."""

    def make(**overrides: Any) -> OrdersSettings:
        return orders_settings(shop_db, stack, **overrides)

    return make
