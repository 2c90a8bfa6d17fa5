"""The recovery job finishes or undoes what a crash left behind (DESIGN §5 step 5).

A crash cannot be staged precisely in-process, so these tests write the state a crash leaves
(an order stuck in `placing` or with a recorded cancel intent) straight into the orders table, and
make the matching reservation through catalog's real internal API. The stack tests SIGKILL a
real process for the same purpose."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from orders.main import create_app
from orders.placement import new_order_number
from shop_dev.testing import RunningStack, ShopDatabase, wait_until

if TYPE_CHECKING:
    from conftest import Actor, ProductFactory, SettingsFactory, Stock


def _reserve(catalog_internal: httpx.Client, lines: list[tuple[int, int]]) -> uuid.UUID:
    rid = uuid.uuid4()
    response = catalog_internal.post(
        "/internal/reservations",
        json={
            "reservation_id": str(rid),
            "items": [{"product_id": p, "quantity": q} for p, q in lines],
        },
    )
    assert response.status_code == 201, response.text
    return rid


def _stuck_order(
    engine: Engine, user_id: int, reservation_id: uuid.UUID, *, age_seconds: int = 3600
) -> int:
    """The row a crash right after step 2 (or 3) leaves: `placing`, no items yet."""
    return _order_row(engine, user_id, reservation_id, "placing", age=age_seconds)


def _recover(client: TestClient, shop_db: ShopDatabase, **params: Any) -> dict[str, int]:
    response = client.post(
        "/internal/orders/recover",
        params=params,
        headers={"X-Service-Token": shop_db.internal_api_token},
    )
    assert response.status_code == 200, response.text
    report: dict[str, int] = response.json()
    return report


def test_stuck_order_with_a_held_reservation_is_completed(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(price="4.20", stock=10)
    rid = _reserve(catalog_internal, [(product["id"], 3)])
    order_id = _stuck_order(admin_engine, buyer.id, rid)

    report = _recover(orders_app_client, shop_db)

    # Counts are not asserted: the stack's own orders process runs the same job in the
    # background and may take an order first. The outcome is what matters.
    assert set(report) == {"completed", "failed", "cancelled", "skipped", "repaired"}
    order = buyer.get(f"/orders/{order_id}").json()
    assert order["status"] == "pending"
    assert order["total_amount"] == "12.60"
    assert [(i["product_id"], i["quantity"], i["unit_price"]) for i in order["items"]] == [
        (product["id"], 3, "4.20")
    ]
    view = stock.assert_consistent({product["id"]: 10}, [buyer.id])
    assert view[product["id"]] == {"available": 7, "held": 0, "committed": 3}


def test_stuck_order_without_a_reservation_is_failed(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    admin_engine: Engine,
    buyer: Actor,
) -> None:
    order_id = _stuck_order(admin_engine, buyer.id, uuid.uuid4())

    _recover(orders_app_client, shop_db)

    assert buyer.get(f"/orders/{order_id}").json()["status"] == "failed"
    assert buyer.get("/orders/").json()["total"] == 0


def test_stuck_order_whose_reservation_was_released_is_failed(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=5)
    rid = _reserve(catalog_internal, [(product["id"], 2)])
    assert catalog_internal.post(f"/internal/reservations/{rid}/release").status_code == 200
    order_id = _stuck_order(admin_engine, buyer.id, rid)

    _recover(orders_app_client, shop_db)

    assert buyer.get(f"/orders/{order_id}").json()["status"] == "failed"
    stock.assert_consistent({product["id"]: 5}, [buyer.id])


def test_stuck_order_whose_reservation_expired_unswept_is_failed(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    """catalog still shows the reservation `held` but past its expiry, so `/commit` answers 409:
    the order is given up (released, `failed`) instead of being retried forever."""
    product = make_product(stock=6)
    rid = _reserve(catalog_internal, [(product["id"], 4)])
    with admin_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE catalog.reservations SET expires_at = now() - interval '1 second'"
                " WHERE id = :r"
            ),
            {"r": rid},
        )
    order_id = _stuck_order(admin_engine, buyer.id, rid)

    _recover(orders_app_client, shop_db)

    assert buyer.get(f"/orders/{order_id}").json()["status"] == "failed"
    view = stock.assert_consistent({product["id"]: 6}, [buyer.id])
    assert view[product["id"]] == {"available": 6, "held": 0, "committed": 0}
    assert catalog_internal.get(f"/internal/reservations/{rid}").json()["status"] in (
        "released",
        "expired",
    )


def test_orders_younger_than_the_deadline_are_left_alone(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=5)
    rid = _reserve(catalog_internal, [(product["id"], 1)])
    order_id = _stuck_order(admin_engine, buyer.id, rid, age_seconds=0)

    _recover(orders_app_client, shop_db)  # default deadline: 60 s
    untouched = buyer.get(f"/orders/{order_id}").json()["status"]
    _recover(orders_app_client, shop_db, older_than_seconds=0)

    assert untouched == "placing"
    assert buyer.get(f"/orders/{order_id}").json()["status"] == "pending"
    stock.assert_consistent({product["id"]: 5}, [buyer.id])


def test_concurrent_recovery_runs_finish_each_order_exactly_once(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=30)
    order_ids = [
        _stuck_order(admin_engine, buyer.id, _reserve(catalog_internal, [(product["id"], 2)]))
        for _ in range(8)
    ]

    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: _recover(orders_app_client, shop_db), range(4)))

    assert [r["skipped"] for r in reports] == [0, 0, 0, 0]
    statuses = [buyer.get(f"/orders/{i}").json()["status"] for i in order_ids]
    assert statuses == ["pending"] * 8
    view = stock.assert_consistent({product["id"]: 30}, [buyer.id])
    assert view[product["id"]] == {"available": 14, "held": 0, "committed": 16}


def test_a_recorded_cancel_intent_is_finished_by_recovery(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=10)
    order = buyer.order((product["id"], 4)).json()
    with admin_engine.begin() as conn:  # the process died after recording the intent
        conn.execute(
            text(
                "UPDATE orders.orders SET cancel_requested_at = now(),"
                " updated_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": order["id"]},
        )
    refused = buyer.patch(f"/orders/{order['id']}/status", params={"new_status": "confirmed"})

    _recover(orders_app_client, shop_db)

    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/cancellation-pending"
    assert buyer.get(f"/orders/{order['id']}").json()["status"] == "cancelled"
    view = stock.assert_consistent({product["id"]: 10}, [buyer.id])
    assert view[product["id"]]["available"] == 10


def test_recover_endpoint_needs_the_service_token(orders_app_client: TestClient) -> None:
    missing = orders_app_client.post("/internal/orders/recover")
    wrong = orders_app_client.post(
        "/internal/orders/recover", headers={"X-Service-Token": "wrong-token-wrong-token"}
    )

    assert missing.status_code == wrong.status_code == 403


def test_the_background_job_recovers_without_being_asked(
    make_settings: SettingsFactory,
    admin_engine: Engine,
    buyer: Actor,
) -> None:
    order_id = _stuck_order(admin_engine, buyer.id, uuid.uuid4())
    settings = make_settings(recovery_interval_seconds=0.2, placing_deadline_seconds=30)

    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _status(admin_engine, order_id) == "placing":
            time.sleep(0.1)

    assert _status(admin_engine, order_id) == "failed"


def _status(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.scalar(text("SELECT status FROM orders.orders WHERE id = :id"), {"id": order_id})
        )


def _order_row(
    engine: Engine, user_id: int, reservation_id: uuid.UUID, status: str, *, age: int = 3600
) -> int:
    """An order row in any status, as an older version (or a bug) may have left it."""
    with engine.begin() as conn:
        order_id = conn.scalar(
            text(
                "INSERT INTO orders.orders (order_number, status, user_id, reservation_id,"
                " created_at, updated_at) VALUES (:n, :s, :u, :r,"
                " now() - make_interval(secs => :age), now() - make_interval(secs => :age))"
                " RETURNING id"
            ),
            {"n": new_order_number(), "s": status, "u": user_id, "r": reservation_id, "age": age},
        )
    assert isinstance(order_id, int)
    return order_id


def _age_reservation(engine: Engine, reservation_id: uuid.UUID, seconds: int = 3600) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE catalog.reservations SET updated_at = now() - make_interval(secs => :s)"
                " WHERE id = :r"
            ),
            {"s": seconds, "r": reservation_id},
        )


def _repairs(orders_app_client: TestClient, stack: RunningStack) -> dict[str, float]:
    """`shop_orders_reconciliation_repairs_total` by kind, added up over both orders processes that
    reconcile this database: the in-test app and the stack's own, whose background job may take a
    repair first."""
    prefix = "shop_orders_reconciliation_repairs_total{"
    found: dict[str, float] = {}
    scrapes = (
        orders_app_client.get("/metrics").text,
        httpx.get(f"{stack.url('orders')}/metrics", timeout=10).text,
    )
    for metrics in scrapes:
        for line in metrics.splitlines():
            if line.startswith(prefix):
                labels, value = line[len(prefix) :].split("} ")
                kind = labels.removeprefix('kind="').removesuffix('"')
                found[kind] = found.get(kind, 0.0) + float(value)
    return found


def test_reconciliation_restocks_a_committed_reservation_left_behind(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
    stack: RunningStack,
) -> None:
    """Issue 11's stock leak as data an older version left: a `failed` order whose reservation is
    `committed`, and a committed reservation no order refers to. Both heal, and are counted.

    The stack's own orders process reconciles the same database in the background, so a repair
    may be its rather than the in-test app's: counts are read over both processes."""
    product = make_product(stock=10)
    leaked = _reserve(catalog_internal, [(product["id"], 1)])
    orphan = _reserve(catalog_internal, [(product["id"], 2)])
    dead_hold = _reserve(catalog_internal, [(product["id"], 3)])
    for rid in (leaked, orphan):
        assert catalog_internal.post(f"/internal/reservations/{rid}/commit").status_code == 200
    failed_id = _order_row(admin_engine, buyer.id, leaked, "failed")
    _order_row(admin_engine, buyer.id, dead_hold, "rejected")
    assert stock.view([product["id"]])[product["id"]] == {
        "available": 4,
        "held": 3,
        "committed": 3,
    }
    # Read before the reservations age: until then no reconciler, in-test or background, takes them.
    before = _repairs(orders_app_client, stack)
    for rid in (leaked, orphan, dead_hold):
        _age_reservation(admin_engine, rid)

    _recover(orders_app_client, shop_db, older_than_seconds=60)

    view = stock.view([product["id"]])
    assert view[product["id"]] == {"available": 10, "held": 0, "committed": 0}
    statuses = {
        rid: catalog_internal.get(f"/internal/reservations/{rid}").json()["status"]
        for rid in (leaked, orphan, dead_hold)
    }
    assert set(statuses.values()) == {"released"}
    assert buyer.get(f"/orders/{failed_id}").json()["status"] == "failed"
    kinds = ("committed_for_failed_order", "committed_without_order", "held_for_rejected_order")

    def counted() -> bool:
        after = _repairs(orders_app_client, stack)
        missing = [k for k in kinds if after.get(k, 0) < before.get(k, 0) + 1]
        assert not missing, (missing, before, after)
        return True

    # A background repair is counted just after its release: give the count a moment to land.
    wait_until(counted, deadline=5, interval=0.1, what="a repair counted of each kind")


def test_reconciliation_leaves_recent_and_consistent_reservations_alone(
    orders_app_client: TestClient,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
) -> None:
    product = make_product(stock=10)
    recent_orphan = _reserve(catalog_internal, [(product["id"], 1)])  # a placement in flight
    live = _reserve(catalog_internal, [(product["id"], 2)])
    assert catalog_internal.post(f"/internal/reservations/{live}/commit").status_code == 200
    _order_row(admin_engine, buyer.id, live, "pending")
    _age_reservation(admin_engine, live)

    _recover(orders_app_client, shop_db, older_than_seconds=60)

    assert (
        catalog_internal.get(f"/internal/reservations/{recent_orphan}").json()["status"] == "held"
    )
    assert catalog_internal.get(f"/internal/reservations/{live}").json()["status"] == "committed"


def test_two_processes_reconciling_at_once_restock_once(
    make_settings: SettingsFactory,
    shop_db: ShopDatabase,
    catalog_internal: httpx.Client,
    admin_engine: Engine,
    buyer: Actor,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    """The recovery job runs in every worker process (WEB_CONCURRENCY) as in every replica: two
    orders apps, each with its own reconciler and cursor (as two workers have), repair the same
    leftovers at the same moment, and stock moves once."""
    product = make_product(stock=20)
    committed_for_failed = [_reserve(catalog_internal, [(product["id"], 1)]) for _ in range(3)]
    committed_orphans = [_reserve(catalog_internal, [(product["id"], 1)]) for _ in range(3)]
    held_for_pending = [_reserve(catalog_internal, [(product["id"], 2)]) for _ in range(2)]
    for rid in committed_for_failed + committed_orphans:
        assert catalog_internal.post(f"/internal/reservations/{rid}/commit").status_code == 200
    for rid in committed_for_failed:
        _order_row(admin_engine, buyer.id, rid, "failed")
    for rid in held_for_pending:
        _order_row(admin_engine, buyer.id, rid, "pending")
    for rid in committed_for_failed + committed_orphans + held_for_pending:
        _age_reservation(admin_engine, rid)
    barrier = threading.Barrier(2)

    def recover(client: TestClient) -> None:
        barrier.wait()
        _recover(client, shop_db, older_than_seconds=60)

    with (
        TestClient(create_app(make_settings())) as first,
        TestClient(create_app(make_settings())) as second,
        ThreadPoolExecutor(2) as pool,
    ):
        # FastAPI builds a route's parameter models on its first match, silencing pydantic's
        # warnings with warnings.catch_warnings, which is not thread-safe: two apps doing it at
        # once in one process (never the case in production: one app per process, matched on
        # its event loop) can surface the warning as an error under pytest's "error" filter.
        # One unauthenticated call per app (403: no work done) builds them first.
        for client in (first, second):
            assert client.post("/internal/orders/recover").status_code == 403
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
