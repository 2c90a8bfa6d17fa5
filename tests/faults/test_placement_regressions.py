"""Regressions of issue 11: order placement loses no stock and tells no client a false outcome.

1. catalog commits the reservation, then dies before answering: orders cannot know whether the
   order is sold. It used to mark the order `failed` and answer 503 while catalog kept the
   reservation `committed`: the units were lost for good.
2. PgBouncer stalls during the final local transaction (items + `pending`): the client used to get
   503 and then the recovery job made that very order `pending` (a ghost order).

Now both answer 202 Accepted with the `placing` order, and the recovery job completes it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from faults.conftest import (
        Buyer,
        FaultProxy,
        Ledger,
        PgBouncerStall,
        ProductFactory,
        Recovery,
    )

pytestmark = pytest.mark.stack

# Orders reserves and commits in one call (`?commit=true`, placement.py): the step after which
# catalog has sold the units. (It was the separate `/commit` call.)
RESERVE_AND_COMMIT = "/internal/reservations"
# Longer than libpq's connect_timeout (5 s, shop_common.db): the final transaction gives up.
STALL_SECONDS = 8.0


def _key() -> str:
    return f"regression-{uuid.uuid4().hex}"


def _assert_accepted(response: httpx.Response) -> dict[str, object]:
    """202 with the order as it stands: `placing`, where to look, and when."""
    assert response.status_code == 202, response.text
    body: dict[str, object] = response.json()
    assert body["status"] == "placing"
    assert response.headers["location"] == f"/orders/{body['id']}"
    assert int(response.headers["retry-after"]) > 0
    return body


def _assert_completed(
    buyer: Buyer, order_id: object, key: str, items: list[tuple[int, int]]
) -> None:
    shown = httpx.get(f"{buyer.gateway}/orders/{order_id}", headers=buyer.headers, timeout=30)
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "pending"
    assert [(i["product_id"], i["quantity"]) for i in shown.json()["items"]] == items
    replay = buyer.order(items, key=key)
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == order_id


def test_catalog_killed_after_committing_is_202_and_the_order_is_completed(
    stack: RunningStack,
    catalog_proxy: FaultProxy,
    buyer: Buyer,
    make_product: ProductFactory,
    ledger: Ledger,
    recovery: Recovery,
) -> None:
    product = make_product(stock=5, price="3.00")
    catalog_proxy.add_rule(
        "POST",
        RESERVE_AND_COMMIT,
        after_reply=lambda: stack.kill("catalog"),
        drop_reply=True,
        times=1,
    )
    key = _key()

    response = buyer.order([(product["id"], 2)], key=key)

    body = _assert_accepted(response)
    catalog_proxy.wait_idle()
    [stuck] = ledger.orders(buyer.id)
    assert (stuck["id"], stuck["status"]) == (body["id"], "placing")
    assert stuck["reservation_status"] == "committed"  # sold in catalog, never told to orders

    stack.ensure_running()  # catalog comes back
    recovery.settle(ledger, [buyer.id])

    [order] = ledger.orders(buyer.id)
    assert (order["status"], order["reservation_status"]) == ("pending", "committed")
    assert str(order["total_amount"]) == "6.00"
    view = ledger.assert_invariant({product["id"]: 5}, [buyer.id])
    assert view[product["id"]] == {"available": 3, "held": 0, "committed": 2}
    _assert_completed(buyer, body["id"], key, [(product["id"], 2)])


def test_pgbouncer_stalled_in_the_final_transaction_is_202_not_a_503_ghost(
    catalog_proxy: FaultProxy,
    pgbouncer_stall: PgBouncerStall,
    buyer: Buyer,
    make_product: ProductFactory,
    ledger: Ledger,
    recovery: Recovery,
) -> None:
    product = make_product(stock=5, price="2.50")
    # Catalog has committed and answered; PgBouncer freezes before orders' last transaction.
    catalog_proxy.add_rule(
        "POST",
        RESERVE_AND_COMMIT,
        after_reply=lambda: pgbouncer_stall.freeze(STALL_SECONDS),
        times=1,
    )
    key = _key()

    response = buyer.order([(product["id"], 3)], key=key)

    body = _assert_accepted(response)
    pgbouncer_stall.wait_resumed()
    recovery.settle(ledger, [buyer.id])

    [order] = ledger.orders(buyer.id)
    assert (order["id"], order["status"]) == (body["id"], "pending")
    assert order["reservation_status"] == "committed"
    view = ledger.assert_invariant({product["id"]: 5}, [buyer.id])
    assert view[product["id"]] == {"available": 2, "held": 0, "committed": 3}
    _assert_completed(buyer, body["id"], key, [(product["id"], 3)])
