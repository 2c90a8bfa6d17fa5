"""Faults in containers, injected with the Docker engine itself: catalog killed during order traffic,
PgBouncer restarted. What must hold is the contract (DESIGN §5, services/orders/README.md) and the
stock invariant, read straight from the tables inside the postgres container.

This file runs after test_compose_stack.py (same session stack; pytest takes files in name order):
after a `docker kill` and `docker compose start`, the next `docker compose up` recreates the killed
container (observed with Compose 2.40), which the "second up changes nothing" check must not see."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from containers.conftest import ComposeStack

pytestmark = [pytest.mark.docker, pytest.mark.compose]

# 201 placed; 202 accepted, outcome being resolved (Location to poll); 409 a conflict the client must
# look at; 503 (problem+json) no order exists and nothing is held.
CONTRACT_STATUSES = {201, 202, 409, 503}
LIVE_STATUSES = ("pending", "confirmed", "shipped", "delivered")
INITIAL_STOCK = 100
# A 202's order is recovered once it has been `placing` for PLACING_DEADLINE_SECONDS (60), and
# reconciliation leaves reservations changed in the last 60 s alone; RECOVERY_INTERVAL_SECONDS=1
# in the test override. Within the test's 300 s timeout.
RECOVERY_DEADLINE_SECONDS = 200


def _stock_view(stack: ComposeStack, product_id: int) -> dict[str, int]:
    [[available, held, committed]] = stack.psql(
        f"""
        SELECT p.stock_quantity,
               coalesce(sum(ri.quantity) FILTER (WHERE r.status = 'held'), 0),
               coalesce(sum(ri.quantity) FILTER (WHERE r.status = 'committed'), 0)
        FROM catalog.products p
        LEFT JOIN catalog.reservation_items ri ON ri.product_id = p.id
        LEFT JOIN catalog.reservations r ON r.id = ri.reservation_id
        WHERE p.id = {int(product_id)}
        GROUP BY p.id
        """
    )
    live = ", ".join(f"'{s}'" for s in LIVE_STATUSES)
    # Every `placing` order of the stack: one answered 202 has no items yet, so it cannot be found
    # through the product (the compose project is this module's own).
    [[placing, in_live_orders]] = stack.psql(
        f"""
        SELECT (SELECT count(*) FROM orders.orders WHERE status = 'placing'),
               coalesce(sum(i.quantity) FILTER (WHERE o.status IN ({live})), 0)
        FROM orders.orders o JOIN orders.order_items i ON i.order_id = o.id
        WHERE i.product_id = {int(product_id)}
        """
    )
    return {
        "available": int(available),
        "held": int(held),
        "committed": int(committed),
        "placing": int(placing),
        "in_live_orders": int(in_live_orders),
    }


def _invariant_holds(view: dict[str, int]) -> bool:
    """DESIGN §5, once everything is resolved: initial = available + held + committed, with
    nothing held or placing any more, and what catalog counts as committed is exactly what the
    live orders hold."""
    assert view["available"] >= 0, view
    assert view["available"] + view["held"] + view["committed"] == INITIAL_STOCK, view
    return (
        view["held"] == 0 and view["placing"] == 0 and view["committed"] == view["in_live_orders"]
    )


def _buyer(stack: ComposeStack, api: httpx.Client) -> dict[str, str]:
    name = f"buyer{uuid.uuid4().hex[:10]}"
    password = "containers-password-1"
    response = api.post(
        "/users/", json={"username": name, "email": f"{name}@example.com", "password": password}
    )
    assert response.status_code == 201, response.text
    return stack.login(api, name, password)


def _product(stack: ComposeStack, api: httpx.Client, admin: dict[str, str]) -> int:
    suffix = uuid.uuid4().hex[:10]
    response = api.post(
        "/products/",
        json={
            "name": f"Fault crate {suffix}",
            "sku": f"FAULT-{suffix.upper()}",
            "price": "3.00",
            "stock_quantity": INITIAL_STOCK,
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_catalog_killed_during_order_traffic_then_back_recovery_restores_the_invariant(
    compose_stack: ComposeStack, api: httpx.Client
) -> None:
    admin = compose_stack.login(api, compose_stack.admin_username, compose_stack.admin_password)
    buyer = _buyer(compose_stack, api)
    product_id = _product(compose_stack, api, admin)
    catalog_started = compose_stack.inspect("catalog")["State"]["StartedAt"]
    stop = threading.Event()
    results: list[tuple[float, int, dict[str, Any] | None]] = []
    lock = threading.Lock()

    def place_orders() -> None:
        with httpx.Client(base_url=compose_stack.base_url, timeout=30) as client:
            while not stop.is_set() and len(results) < 60:
                response = client.post(
                    "/orders/",
                    json={"items": [{"product_id": product_id, "quantity": 1}]},
                    headers={**buyer, "Idempotency-Key": f"kill-{uuid.uuid4().hex}"},
                )
                body = response.json() if response.content else None
                with lock:
                    results.append((time.monotonic(), response.status_code, body))
                if response.status_code == 503:
                    assert response.headers["content-type"] == "application/problem+json"
                time.sleep(0.05)

    with ThreadPoolExecutor(max_workers=3) as pool:
        workers = [pool.submit(place_orders) for _ in range(3)]
        compose_stack.until(
            lambda: any(s == 201 for _, s, _ in results), deadline=60, what="traffic"
        )
        killed_at = time.monotonic()
        compose_stack.docker_cli("kill", compose_stack.container_id("catalog"))
        # Orders keeps answering while catalog is gone: a few requests against the dead upstream.
        compose_stack.until(
            lambda: sum(t > killed_at + 1 for t, _, _ in results) >= 6, deadline=90, what="traffic"
        )
        stop.set()
        for worker in workers:
            worker.result(timeout=120)  # re-raises a failed assertion of a worker

    statuses = [status for _, status, _ in results]
    assert set(statuses) <= CONTRACT_STATUSES, statuses
    after_kill = [status for t, status, _ in results if t > killed_at + 1]
    assert set(after_kill) - {201}, f"catalog's death was never seen: {after_kill}"

    # Catalog back (a no-op if Docker's restart policy already restarted it), then the recovery job.
    compose_stack.run("start", "catalog")
    compose_stack.wait_healthy("catalog")
    assert compose_stack.inspect("catalog")["State"]["StartedAt"] != catalog_started

    def resolved() -> dict[str, int] | None:
        view = _stock_view(compose_stack, product_id)
        return view if _invariant_holds(view) else None

    view = compose_stack.until(
        resolved,
        deadline=RECOVERY_DEADLINE_SECONDS,
        interval=1,
        what="recovery resolves every order",
    )
    placed = sum(1 for status in statuses if status == 201)
    assert view["committed"] >= placed, (view, statuses)
    # A 202's order resolves one way or the other; poll it like a client would.
    for _, status, body in results:
        if status == 202 and body is not None and "id" in body:
            order = api.get(f"/orders/{body['id']}", headers=buyer)
            assert order.status_code == 200, order.text
            assert order.json()["status"] in (*LIVE_STATUSES, "failed", "rejected", "cancelled")


def test_pgbouncer_restart_services_recover_without_a_restart(
    compose_stack: ComposeStack, api: httpx.Client
) -> None:
    apps = ("users", "catalog", "orders", "gateway")
    started = {s: compose_stack.inspect(s)["State"]["StartedAt"] for s in apps}
    admin = compose_stack.login(api, compose_stack.admin_username, compose_stack.admin_password)
    buyer = _buyer(compose_stack, api)

    compose_stack.run("restart", "-t", "5", "pgbouncer")

    # Each service's next database work succeeds once PgBouncer is back: users (a login), catalog
    # (a product) and orders (an order, which also reserves in catalog).
    compose_stack.until(
        lambda: api.get("/health").status_code == 200, deadline=90, what="/health ok again"
    )
    compose_stack.until(
        lambda: (
            api.post(
                "/auth/token",
                data={
                    "username": compose_stack.admin_username,
                    "password": compose_stack.admin_password,
                },
            ).status_code
            == 200
        ),
        deadline=90,
        what="users logs in",
    )
    product_id = compose_stack.until(
        lambda: _product(compose_stack, api, admin), deadline=90, what="catalog writes"
    )
    order = compose_stack.until(
        lambda: (
            r
            if (
                r := api.post(
                    "/orders/",
                    json={"items": [{"product_id": product_id, "quantity": 1}]},
                    headers={**buyer, "Idempotency-Key": f"bouncer-{uuid.uuid4().hex}"},
                )
            ).status_code
            == 201
            else None
        ),
        deadline=90,
        what="orders places an order",
    )
    assert order.json()["status"] == "pending"
    assert {s: compose_stack.inspect(s)["State"]["StartedAt"] for s in apps} == started
