"""The recovery job runs in every worker process (WEB_CONCURRENCY) as in every replica: two orders
apps, each with its own reconciler and cursor (as two workers have), repair the same leftovers at
the same moment, and stock moves once."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from orders.main import create_app
from orders.placement import new_order_number
from shop_dev.testing import ShopDatabase

if TYPE_CHECKING:
    from conftest import Actor, ProductFactory, SettingsFactory, Stock


def _reserve(catalog_internal: httpx.Client, product_id: int, quantity: int) -> uuid.UUID:
    rid = uuid.uuid4()
    response = catalog_internal.post(
        "/internal/reservations",
        json={
            "reservation_id": str(rid),
            "items": [{"product_id": product_id, "quantity": quantity}],
        },
    )
    assert response.status_code == 201, response.text
    return rid


def _leave_behind(engine: Engine, user_id: int, reservation_id: uuid.UUID, status: str) -> None:
    """An order row an older version (or a crash) left, and its reservation aged past the grace."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO orders.orders (order_number, status, user_id, reservation_id,"
                " created_at, updated_at) VALUES (:n, :s, :u, :r,"
                " now() - interval '1 hour', now() - interval '1 hour')"
            ),
            {"n": new_order_number(), "s": status, "u": user_id, "r": reservation_id},
        )


def _age(engine: Engine, reservation_id: uuid.UUID) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE catalog.reservations SET updated_at = now() - interval '1 hour'"
                " WHERE id = :r"
            ),
            {"r": reservation_id},
        )


def test_two_processes_reconciling_at_once_restock_once(
    make_settings: SettingsFactory,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=20)
    committed_for_failed = [_reserve(catalog_internal, product["id"], 1) for _ in range(3)]
    committed_orphans = [_reserve(catalog_internal, product["id"], 1) for _ in range(3)]
    held_for_pending = [_reserve(catalog_internal, product["id"], 2) for _ in range(2)]
    for rid in committed_for_failed + committed_orphans:
        assert catalog_internal.post(f"/internal/reservations/{rid}/commit").status_code == 200
    for rid in committed_for_failed:
        _leave_behind(admin_engine, buyer.id, rid, "failed")
    for rid in held_for_pending:
        _leave_behind(admin_engine, buyer.id, rid, "pending")
    for rid in committed_for_failed + committed_orphans + held_for_pending:
        _age(admin_engine, rid)
    barrier = threading.Barrier(2)

    def recover(client: TestClient) -> int:
        barrier.wait()
        response = client.post(
            "/internal/orders/recover",
            params={"older_than_seconds": 60},
            headers={"X-Service-Token": shop_db.internal_api_token},
        )
        assert response.status_code == 200, response.text
        repaired: int = response.json()["repaired"]
        return repaired

    with (
        TestClient(create_app(make_settings())) as first,
        TestClient(create_app(make_settings())) as second,
        ThreadPoolExecutor(2) as pool,
    ):
        list(pool.map(recover, (first, second)))

    assert stock.view([product["id"]])[product["id"]] == {
        "available": 16,
        "held": 0,
        "committed": 4,
    }
    statuses = {
        rid: catalog_internal.get(f"/internal/reservations/{rid}").json()["status"]
        for rid in committed_for_failed + committed_orphans + held_for_pending
    }
    assert [statuses[r] for r in committed_for_failed + committed_orphans] == ["released"] * 6
    assert [statuses[r] for r in held_for_pending] == ["committed"] * 2
