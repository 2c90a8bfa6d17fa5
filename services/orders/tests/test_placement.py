"""POST /orders/ against the real catalog: prices from catalog, stock reserved and committed,
rejections leave nothing behind, Idempotency-Key replays."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from conftest import Actor, ActorFactory, ProductFactory, Stock


def test_order_takes_prices_from_catalog_and_decrements_stock(
    buyer: Actor, make_product: ProductFactory, stock: Stock
) -> None:
    mug = make_product(price="19.99", stock=10)
    pen = make_product(price="0.10", stock=5)

    response = buyer.order((mug["id"], 3), (pen["id"], 5))

    assert response.status_code == 201, response.text
    order = response.json()
    assert re.fullmatch(r"ORD-\d{14}-[A-Z0-9]{6}", order["order_number"])
    assert order["status"] == "pending"
    assert order["user_id"] == buyer.id
    assert order["total_amount"] == "60.47"
    assert order["items"] == [
        {
            "product_id": mug["id"],
            "product_name": mug["name"],
            "sku": mug["sku"],
            "quantity": 3,
            "unit_price": "19.99",
            "total_price": "59.97",
        },
        {
            "product_id": pen["id"],
            "product_name": pen["name"],
            "sku": pen["sku"],
            "quantity": 5,
            "unit_price": "0.10",
            "total_price": "0.50",
        },
    ]
    view = stock.assert_consistent({mug["id"]: 10, pen["id"]: 5}, [buyer.id])
    assert view[mug["id"]] == {"available": 7, "held": 0, "committed": 3}
    assert view[pen["id"]] == {"available": 0, "held": 0, "committed": 5}


def test_client_prices_are_refused(buyer: Actor, make_product: ProductFactory) -> None:
    mug = make_product()

    response = buyer.post(
        "/orders/",
        json={"items": [{"product_id": mug["id"], "quantity": 1, "unit_price": "0.01"}]},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "items", 0, "unit_price"]


def test_insufficient_stock_is_409_and_no_order_is_listed(
    buyer: Actor, make_product: ProductFactory, stock: Stock
) -> None:
    plenty = make_product(stock=50)
    scarce = make_product(stock=2)

    response = buyer.order((plenty["id"], 1), (scarce["id"], 3))

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/insufficient-stock"
    assert [s["product_id"] for s in problem["short"]] == [scarce["id"]]
    assert buyer.get("/orders/").json()["total"] == 0
    rejected = buyer.get("/orders/", params={"status": "rejected"}).json()
    assert rejected["total"] == 1
    assert rejected["items"][0]["items"] == []
    view = stock.assert_consistent({plenty["id"]: 50, scarce["id"]: 2}, [buyer.id])
    assert view[plenty["id"]]["available"] == 50


def test_unknown_product_is_422_and_holds_nothing(
    buyer: Actor, make_product: ProductFactory, stock: Stock
) -> None:
    real = make_product(stock=4)

    response = buyer.order((real["id"], 1), (2**31 - 1, 1))

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/unknown-products"
    assert problem["unknown"] == [2**31 - 1]
    assert buyer.get("/orders/").json()["total"] == 0
    stock.assert_consistent({real["id"]: 4}, [buyer.id])


def test_inactive_product_is_422(buyer: Actor, make_product: ProductFactory, stock: Stock) -> None:
    product = make_product(stock=4, is_active=False)

    response = buyer.order((product["id"], 1))

    assert response.status_code == 422
    assert response.json()["inactive"] == [product["id"]]
    stock.assert_consistent({product["id"]: 4}, [buyer.id])


def test_admin_places_an_order_for_another_user(
    admin: Actor, make_product: ProductFactory, make_actor: ActorFactory
) -> None:
    customer = make_actor()
    product = make_product()

    response = admin.post(
        "/orders/",
        json={"items": [{"product_id": product["id"], "quantity": 1}], "user_id": customer.id},
    )

    assert response.status_code == 201
    assert response.json()["user_id"] == customer.id
    assert customer.get("/orders/").json()["total"] == 1


def test_user_cannot_place_an_order_for_someone_else(
    buyer: Actor, make_product: ProductFactory, make_actor: ActorFactory, stock: Stock
) -> None:
    victim = make_actor()
    product = make_product(stock=3)

    response = buyer.post(
        "/orders/",
        json={"items": [{"product_id": product["id"], "quantity": 1}], "user_id": victim.id},
    )

    assert response.status_code == 403
    assert response.json()["type"] == "/problems/acting-for-other-user"
    assert victim.get("/orders/").json()["total"] == 0
    stock.assert_consistent({product["id"]: 3}, [buyer.id, victim.id])


class TestIdempotencyKey:
    def test_replay_answers_the_same_order_and_reserves_once(
        self, buyer: Actor, make_product: ProductFactory, stock: Stock
    ) -> None:
        product = make_product(stock=10)
        key = uuid.uuid4().hex

        first = buyer.order((product["id"], 2), key=key)
        again = buyer.order((product["id"], 2), key=key)

        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        view = stock.assert_consistent({product["id"]: 10}, [buyer.id])
        assert view[product["id"]]["available"] == 8

    def test_same_key_with_another_body_is_422(
        self, buyer: Actor, make_product: ProductFactory, stock: Stock
    ) -> None:
        product = make_product(stock=10)
        key = uuid.uuid4().hex
        assert buyer.order((product["id"], 2), key=key).status_code == 201

        other = buyer.order((product["id"], 3), key=key)

        assert other.status_code == 422
        assert other.json()["type"] == "/problems/idempotency-key-reused"
        assert buyer.get("/orders/").json()["total"] == 1
        stock.assert_consistent({product["id"]: 10}, [buyer.id])

    def test_keys_are_per_user(
        self, make_actor: ActorFactory, make_product: ProductFactory
    ) -> None:
        alice, bob = make_actor(), make_actor()
        product = make_product(stock=10)
        key = uuid.uuid4().hex

        first = alice.order((product["id"], 1), key=key)
        second = bob.order((product["id"], 1), key=key)

        assert first.status_code == second.status_code == 201
        assert first.json()["id"] != second.json()["id"]
        assert "idempotent-replayed" not in second.headers

    def test_concurrent_requests_with_one_key_create_one_order(
        self, buyer: Actor, make_product: ProductFactory, stock: Stock
    ) -> None:
        product = make_product(stock=20)
        key = uuid.uuid4().hex

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: buyer.order((product["id"], 2), key=key), range(6)))

        assert [r.status_code for r in responses] == [201] * 6
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 5
        view = stock.assert_consistent({product["id"]: 20}, [buyer.id])
        assert view[product["id"]]["available"] == 18

    def test_a_rejected_key_replays_the_rejection_and_a_new_key_tries_again(
        self, buyer: Actor, make_product: ProductFactory, catalog_admin: httpx.Client, stock: Stock
    ) -> None:
        """A key's outcome is final (services/orders/README.md): a request with this key still in
        flight can never place an order after its client was told there is none."""
        product = make_product(stock=1)
        key = uuid.uuid4().hex
        assert buyer.order((product["id"], 2), key=key).status_code == 409
        restock = catalog_admin.patch(f"/products/{product['id']}", json={"stock_quantity": 5})
        assert restock.status_code == 200

        replay = buyer.order((product["id"], 2), key=key)
        retry = buyer.order((product["id"], 2), key=uuid.uuid4().hex)

        assert replay.status_code == 409
        assert replay.json()["type"] == "/problems/order-rejected"
        assert replay.headers["idempotent-replayed"] == "true"
        assert retry.status_code == 201
        assert "idempotent-replayed" not in retry.headers
        stock.assert_consistent({product["id"]: 5}, [buyer.id])

    def test_malformed_key_is_422(self, buyer: Actor, make_product: ProductFactory) -> None:
        product = make_product()

        response = buyer.order((product["id"], 1), key="x" * 256)

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_a_placed_order_is_stored_pending_not_placing(
    admin_engine: Engine, buyer: Actor, make_product: ProductFactory
) -> None:
    product = make_product()
    assert buyer.order((product["id"], 1)).status_code == 201

    with admin_engine.connect() as conn:
        statuses = conn.scalars(
            text("SELECT status FROM orders.orders WHERE user_id = :u"), {"u": buyer.id}
        ).all()
    assert statuses == ["pending"]
