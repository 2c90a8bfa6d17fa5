"""Reads, bad input, status changes and cancellation, stats."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shop_common.db import count_queries

if TYPE_CHECKING:
    from conftest import Actor, ActorFactory, ProductFactory, Stock


def _place(actor: Actor, *lines: tuple[int, int]) -> dict[str, Any]:
    response = actor.order(*lines)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


class TestBadInput:
    @pytest.mark.parametrize(
        ("items", "loc"),
        [
            ([], ["body", "items"]),
            ([{"product_id": 1, "quantity": 0}], ["body", "items", 0, "quantity"]),
            ([{"product_id": 1, "quantity": -1}], ["body", "items", 0, "quantity"]),
            ([{"product_id": 1, "quantity": 1001}], ["body", "items", 0, "quantity"]),
            ([{"product_id": 1, "quantity": "abc"}], ["body", "items", 0, "quantity"]),
            ([{"product_id": 1, "quantity": 2**31}], ["body", "items", 0, "quantity"]),
            ([{"product_id": 2**31, "quantity": 1}], ["body", "items", 0, "product_id"]),
            ([{"product_id": 0, "quantity": 1}], ["body", "items", 0, "product_id"]),
            ([{"product_id": 1}], ["body", "items", 0, "quantity"]),
            (
                [{"product_id": 7, "quantity": 1}, {"product_id": 7, "quantity": 2}],
                ["body", "items"],
            ),
            ([{"product_id": i, "quantity": 1} for i in range(1, 102)], ["body", "items"]),
        ],
        ids=[
            "empty",
            "zero",
            "negative",
            "1001",
            "text",
            "2^31",
            "product-id-2^31",
            "product-id-0",
            "missing-quantity",
            "duplicate-products",
            "101-lines",
        ],
    )
    def test_bad_items_are_422_and_store_nothing(
        self, buyer: Actor, items: list[dict[str, Any]], loc: list[Any]
    ) -> None:
        response = buyer.post("/orders/", json={"items": items})

        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == loc
        for status in ("placing", "rejected", "failed", None):
            listing = buyer.get("/orders/", params={"status": status} if status else None)
            assert listing.json()["total"] == 0

    @pytest.mark.parametrize(
        "body",
        [None, "not json", {"items": "x"}, {"items": [{"product_id": 1, "quantity": 1}], "x": 1}],
        ids=["no-body", "not-json", "items-not-a-list", "unknown-field"],
    )
    def test_malformed_bodies_are_422(self, buyer: Actor, body: Any) -> None:
        response = buyer.post("/orders/", json=body)

        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"

    def test_placing_an_order_needs_a_token(self, orders_app_client: TestClient) -> None:
        response = orders_app_client.post(
            "/orders/", json={"items": [{"product_id": 1, "quantity": 1}]}
        )

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("path", ["/orders/0", "/orders/abc", f"/orders/{2**31}"])
    def test_malformed_order_ids_are_422(self, buyer: Actor, path: str) -> None:
        assert buyer.get(path).status_code == 422

    def test_unknown_status_filter_is_422(self, buyer: Actor) -> None:
        assert buyer.get("/orders/", params={"status": "lost"}).status_code == 422


class TestReads:
    def test_owner_reads_own_order_and_others_get_404(
        self, buyer: Actor, make_actor: ActorFactory, make_product: ProductFactory
    ) -> None:
        product = make_product()
        order = _place(buyer, (product["id"], 1))
        stranger = make_actor()

        mine = buyer.get(f"/orders/{order['id']}")
        theirs = stranger.get(f"/orders/{order['id']}")

        assert mine.status_code == 200
        assert mine.json() == order
        assert theirs.status_code == 404
        assert theirs.json()["type"] == "/problems/order-not-found"

    def test_admin_reads_any_order(
        self, buyer: Actor, admin: Actor, make_product: ProductFactory
    ) -> None:
        order = _place(buyer, (make_product()["id"], 1))

        assert admin.get(f"/orders/{order['id']}").json() == order

    def test_list_shows_only_own_orders_newest_first(
        self, buyer: Actor, make_actor: ActorFactory, make_product: ProductFactory
    ) -> None:
        product = make_product(stock=10)
        first = _place(buyer, (product["id"], 1))
        second = _place(buyer, (product["id"], 2))
        _place(make_actor(), (product["id"], 1))

        page = buyer.get("/orders/").json()

        assert [o["id"] for o in page["items"]] == [second["id"], first["id"]]
        assert (page["total"], page["page"], page["total_pages"], page["has_next"]) == (
            2,
            1,
            1,
            False,
        )

    def test_user_cannot_list_someone_elses_orders(
        self, buyer: Actor, make_actor: ActorFactory
    ) -> None:
        other = make_actor()

        assert buyer.get("/orders/", params={"user_id": other.id}).status_code == 403
        assert buyer.get(f"/orders/user/{other.id}").status_code == 404
        assert buyer.get(f"/orders/user/{buyer.id}").status_code == 200

    def test_admin_filters_by_user_and_status(
        self, buyer: Actor, admin: Actor, make_product: ProductFactory
    ) -> None:
        product = make_product(stock=10)
        pending = _place(buyer, (product["id"], 1))
        confirmed = _place(buyer, (product["id"], 1))
        admin.patch(f"/orders/{confirmed['id']}/status", params={"new_status": "confirmed"})

        by_user = admin.get("/orders/", params={"user_id": buyer.id}).json()
        by_status = admin.get(
            "/orders/", params={"user_id": buyer.id, "status": "confirmed"}
        ).json()
        by_path = admin.get(f"/orders/user/{buyer.id}", params={"status": "pending"}).json()

        assert [o["id"] for o in by_user["items"]] == [confirmed["id"], pending["id"]]
        assert [o["id"] for o in by_status["items"]] == [confirmed["id"]]
        assert [o["id"] for o in by_path["items"]] == [pending["id"]]

    def test_listing_costs_three_queries_whatever_the_page_size(
        self,
        orders_app_client: TestClient,
        buyer: Actor,
        make_product: ProductFactory,
    ) -> None:
        products = [make_product(stock=50) for _ in range(3)]
        for _ in range(5):
            _place(buyer, *[(p["id"], 1) for p in products])
        app = orders_app_client.app
        assert isinstance(app, FastAPI)

        with count_queries(app.state.engine) as queries:
            page = buyer.get("/orders/", params={"page_size": 5}).json()

        assert len(page["items"]) == 5
        assert all(len(o["items"]) == 3 for o in page["items"])
        assert queries.value == 3


class TestStatus:
    @pytest.mark.parametrize(
        ("path", "allowed"),
        [
            (["confirmed"], True),
            (["confirmed", "shipped"], True),
            (["confirmed", "shipped", "delivered"], True),
            (["shipped"], False),
            (["delivered"], False),
            (["pending"], False),
            (["confirmed", "shipped", "cancelled"], False),
            (["confirmed", "shipped", "delivered", "cancelled"], False),
            (["confirmed", "pending"], False),
            (["placing"], False),
            (["rejected"], False),
        ],
        ids=lambda v: "-".join(v) if isinstance(v, list) else str(v),
    )
    def test_admin_moves_follow_the_status_machine(
        self,
        admin: Actor,
        buyer: Actor,
        make_product: ProductFactory,
        path: list[str],
        allowed: bool,
    ) -> None:
        order = _place(buyer, (make_product()["id"], 1))
        responses = [
            admin.patch(f"/orders/{order['id']}/status", params={"new_status": s}) for s in path
        ]

        *before, last = responses
        assert all(r.status_code == 200 for r in before)
        if allowed:
            assert last.status_code == 200
            assert last.json()["status"] == path[-1]
            assert last.json()["items"] == order["items"]
        else:
            assert last.status_code == 409
            assert last.json()["type"] == "/problems/invalid-status-transition"
            expected = path[-2] if len(path) > 1 else "pending"
            assert buyer.get(f"/orders/{order['id']}").json()["status"] == expected

    def test_owner_may_cancel_but_not_confirm(
        self, buyer: Actor, make_product: ProductFactory
    ) -> None:
        order = _place(buyer, (make_product()["id"], 1))

        confirm = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})
        cancel = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "cancelled"})

        assert confirm.status_code == 403
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "cancelled"

    def test_stranger_cannot_touch_an_order(
        self, buyer: Actor, make_actor: ActorFactory, make_product: ProductFactory
    ) -> None:
        order = _place(buyer, (make_product()["id"], 1))

        response = make_actor().patch(
            f"/orders/{order['id']}/status", params={"new_status": "cancelled"}
        )

        assert response.status_code == 404
        assert buyer.get(f"/orders/{order['id']}").json()["status"] == "pending"

    def test_cancel_returns_the_stock_once_and_is_idempotent(
        self, buyer: Actor, admin: Actor, make_product: ProductFactory, stock: Stock
    ) -> None:
        product = make_product(stock=10)
        order = _place(buyer, (product["id"], 4))
        admin.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})

        first = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "cancelled"})
        again = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "cancelled"})

        assert first.status_code == again.status_code == 200
        assert again.json()["status"] == "cancelled"
        view = stock.assert_consistent({product["id"]: 10}, [buyer.id])
        assert view[product["id"]] == {"available": 10, "held": 0, "committed": 0}

    def test_shipped_order_cannot_be_cancelled_and_keeps_its_stock(
        self, buyer: Actor, admin: Actor, make_product: ProductFactory, stock: Stock
    ) -> None:
        product = make_product(stock=10)
        order = _place(buyer, (product["id"], 4))
        for status in ("confirmed", "shipped"):
            admin.patch(f"/orders/{order['id']}/status", params={"new_status": status})

        response = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "cancelled"})

        assert response.status_code == 409
        view = stock.assert_consistent({product["id"]: 10}, [buyer.id])
        assert view[product["id"]]["available"] == 6


class TestStats:
    def test_summary_counts_revenue_of_confirmed_shipped_and_delivered(
        self, admin: Actor, buyer: Actor, make_product: ProductFactory
    ) -> None:
        product = make_product(price="10.00", stock=100)
        before = admin.get("/orders/stats/summary").json()
        placed = [_place(buyer, (product["id"], n)) for n in (1, 2, 3, 4)]
        for order, status in zip(placed[1:], ("confirmed", "shipped", "cancelled"), strict=True):
            moves = {"confirmed": ["confirmed"], "shipped": ["confirmed", "shipped"]}
            for move in moves.get(status, [status]):
                admin.patch(f"/orders/{order['id']}/status", params={"new_status": move})

        after = admin.get("/orders/stats/summary").json()

        assert after["total_orders"] - before["total_orders"] == 4
        revenue = Decimal(after["total_revenue"]) - Decimal(before["total_revenue"])
        assert revenue == Decimal("50.00")
        delta = {
            s: after["orders_by_status"][s] - before["orders_by_status"][s]
            for s in after["orders_by_status"]
        }
        assert delta == {
            "placing": 0,
            "pending": 1,
            "confirmed": 1,
            "shipped": 1,
            "delivered": 0,
            "cancelled": 1,
            "rejected": 0,
            "failed": 0,
        }

    def test_average_is_revenue_over_revenue_orders(self, admin: Actor) -> None:
        summary = admin.get("/orders/stats/summary").json()
        n = sum(summary["orders_by_status"][s] for s in ("confirmed", "shipped", "delivered"))
        expected = (Decimal(summary["total_revenue"]) / n).quantize(Decimal("0.01"))

        assert Decimal(summary["average_order_value"]) == expected

    def test_stats_are_admin_only(self, buyer: Actor) -> None:
        assert buyer.get("/orders/stats/summary").status_code == 403
        assert buyer.get("/orders/stats/top-spenders").status_code == 403

    def test_top_spenders_rank_by_amount_and_degrade_to_ids(
        self, admin: Actor, make_actor: ActorFactory, make_product: ProductFactory
    ) -> None:
        product = make_product(price="99999.99", stock=1000)
        whale, dolphin = make_actor(), make_actor()
        for actor, quantity in ((whale, 900), (dolphin, 90)):
            order = _place(actor, (product["id"], quantity))
            admin.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})

        top = admin.get("/orders/stats/top-spenders", params={"limit": 2})

        assert top.status_code == 200
        # These users exist only in tokens: users does not know them, so no username.
        assert top.json() == [
            {
                "user_id": whale.id,
                "username": None,
                "total_spent": "89999991.00",
                "order_count": 1,
            },
            {
                "user_id": dolphin.id,
                "username": None,
                "total_spent": "8999999.10",
                "order_count": 1,
            },
        ]

    @pytest.mark.parametrize("limit", ["0", "101", "x"])
    def test_top_spenders_limit_is_validated(self, admin: Actor, limit: str) -> None:
        assert admin.get("/orders/stats/top-spenders", params={"limit": limit}).status_code == 422
