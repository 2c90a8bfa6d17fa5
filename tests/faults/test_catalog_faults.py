"""Faults between orders and catalog, injected by a proxy the orders process calls catalog
through: a slow catalog (the timeout path), a reservation whose reply is lost because orders
dies, and orders dying after catalog committed. (Catalog stopped, and orders killed by its own
fault hook right after reserving, are covered by services/orders/tests/test_placement_stack.py.)"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pytest

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from faults.conftest import Buyer, FaultProxy, Ledger, ProductFactory, Recovery

pytestmark = pytest.mark.stack

RESERVE = "/internal/reservations"
CALL_BOUND_SECONDS = 3.1  # conftest.CATALOG_CALL_BOUND_SECONDS
SLACK_SECONDS = 2.5  # the release, the database writes and the gateway, on a loaded machine


def _key() -> str:
    return f"fault-{uuid.uuid4().hex}"


class TestSlowCatalog:
    def test_slow_reply_is_a_bounded_503_and_the_reservation_is_released(
        self,
        catalog_proxy: FaultProxy,
        buyer: Buyer,
        make_product: ProductFactory,
        ledger: Ledger,
        recovery: Recovery,
    ) -> None:
        product = make_product(stock=5)
        catalog_proxy.add_rule("POST", RESERVE, delay_before_reply=3.5)
        key = _key()

        started = time.monotonic()
        response = buyer.order([(product["id"], 2)], key=key)
        elapsed = time.monotonic() - started

        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 503
        assert elapsed < CALL_BOUND_SECONDS + SLACK_SECONDS
        catalog_proxy.wait_idle()
        assert catalog_proxy.statuses("POST", RESERVE) == [201, 201]  # same id: idempotent
        [order] = ledger.orders(buyer.id)
        assert (order["status"], order["reservation_status"]) == ("failed", "released")
        assert order["idempotency_key"] == key  # a key's outcome is final

        catalog_proxy.reset()  # catalog is quick again
        replayed = buyer.order([(product["id"], 2)], key=key)
        retried = buyer.order([(product["id"], 2)], key=_key())

        assert replayed.status_code == 503, replayed.text
        assert replayed.json()["type"] == "/problems/order-failed"
        assert replayed.headers["idempotent-replayed"] == "true"
        assert retried.status_code == 201, retried.text
        assert retried.json()["status"] == "pending"
        recovery.run()
        view = ledger.assert_invariant({product["id"]: 5}, [buyer.id])
        assert view[product["id"]] == {"available": 3, "held": 0, "committed": 2}
        assert [o["status"] for o in ledger.orders(buyer.id)] == ["failed", "pending"]

    def test_reservation_arriving_after_orders_gave_up_holds_no_stock(
        self,
        catalog_proxy: FaultProxy,
        buyer: Buyer,
        make_product: ProductFactory,
        ledger: Ledger,
        recovery: Recovery,
    ) -> None:
        """The request itself is slow to reach catalog: orders times out, releases (nothing to
        release yet) and answers 503; then the late reservation lands in catalog."""
        product = make_product(stock=5)
        catalog_proxy.add_rule("POST", RESERVE, delay_before_forward=5.0)

        started = time.monotonic()
        response = buyer.order([(product["id"], 2)], key=_key())
        elapsed = time.monotonic() - started

        assert response.status_code == 503, response.text
        assert elapsed < CALL_BOUND_SECONDS + SLACK_SECONDS
        catalog_proxy.wait_idle()
        # Both attempts landed after orders had released the id: catalog refuses them, takes nothing.
        assert catalog_proxy.statuses("POST", RESERVE) == [409, 409]
        [order] = ledger.orders(buyer.id)
        assert order["status"] == "failed"
        recovery.run()
        # DESIGN §4: after a 503 "no stock stays held" - not even until the reservation's TTL.
        view = ledger.assert_invariant({product["id"]: 5}, [buyer.id])
        assert view[product["id"]] == {"available": 5, "held": 0, "committed": 0}


class TestOrdersDiesMidPlacement:
    def test_reply_lost_after_catalog_reserved_is_completed_by_recovery(
        self,
        stack: RunningStack,
        catalog_proxy: FaultProxy,
        buyer: Buyer,
        make_product: ProductFactory,
        ledger: Ledger,
        recovery: Recovery,
    ) -> None:
        product = make_product(stock=5, price="4.25")
        catalog_proxy.add_rule("POST", RESERVE, after_reply=lambda: stack.kill("orders"), times=1)
        key = _key()

        response = buyer.order([(product["id"], 3)], key=key)

        assert response.status_code == 502, response.text  # the gateway lost its upstream
        assert response.headers["content-type"] == "application/problem+json"
        assert catalog_proxy.statuses("POST", RESERVE)[0] == 201  # (a retry may follow it)
        # The proxy kills orders on its own thread; the gateway's 502 can arrive a moment before
        # that thread has reaped the process.
        deadline = time.monotonic() + 10
        while stack.pid("orders") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stack.pid("orders") is None
        [stuck] = ledger.orders(buyer.id)
        # Reserved and committed in one call (`?commit=true`, placement.py); it was `held` when
        # orders committed in a second call. Recovery completing a `held` one: test_recovery.py.
        assert (stuck["status"], stuck["reservation_status"]) == ("placing", "committed")

        stack.ensure_running()  # a fresh orders process
        recovery.run()

        [order] = ledger.orders(buyer.id)
        assert (order["status"], order["reservation_status"]) == ("pending", "committed")
        assert str(order["total_amount"]) == "12.75"
        view = ledger.assert_invariant({product["id"]: 5}, [buyer.id])
        assert view[product["id"]] == {"available": 2, "held": 0, "committed": 3}
        replay = buyer.order([(product["id"], 3)], key=key)
        assert replay.status_code == 201, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        assert (replay.json()["id"], replay.json()["status"]) == (order["id"], "pending")

    def test_killed_after_catalog_committed_is_completed_by_recovery(
        self,
        stack: RunningStack,
        catalog_proxy: FaultProxy,
        buyer: Buyer,
        make_product: ProductFactory,
        ledger: Ledger,
        recovery: Recovery,
    ) -> None:
        first = make_product(stock=4, price="1.50")
        second = make_product(stock=4, price="2.00")
        # The call that commits in catalog: reserve-and-commit (`?commit=true`, placement.py).
        catalog_proxy.add_rule("POST", RESERVE, after_reply=lambda: stack.kill("orders"), times=1)
        key = _key()

        response = buyer.order([(first["id"], 1), (second["id"], 4)], key=key)

        assert response.status_code == 502, response.text
        assert catalog_proxy.statuses("POST", RESERVE)[0] == 201
        [stuck] = ledger.orders(buyer.id)
        assert (stuck["status"], stuck["reservation_status"]) == ("placing", "committed")

        stack.ensure_running()
        recovery.run()

        [order] = ledger.orders(buyer.id)
        assert (order["status"], order["reservation_status"]) == ("pending", "committed")
        assert str(order["total_amount"]) == "9.50"
        view = ledger.assert_invariant({first["id"]: 4, second["id"]: 4}, [buyer.id])
        assert view[second["id"]] == {"available": 0, "held": 0, "committed": 4}
        replay = buyer.order([(first["id"], 1), (second["id"], 4)], key=key)
        assert replay.status_code == 201, replay.text
        assert replay.json()["id"] == order["id"]
        assert [(i["product_id"], i["quantity"]) for i in replay.json()["items"]] == [
            (first["id"], 1),
            (second["id"], 4),
        ]
