"""The gateway dies (SIGKILL) and comes back while clients retry POST /orders/ with their
Idempotency-Key: every key ends with exactly one order, and stock moved exactly once per key."""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from faults.conftest import Buyer, Ledger, ProductFactory, Recovery

pytestmark = pytest.mark.stack

CLIENTS = 4
ORDERS_PER_CLIENT = 4


def test_gateway_restart_with_idempotent_retries_makes_no_duplicate_orders(
    stack: RunningStack,
    buyer: Buyer,
    make_product: ProductFactory,
    ledger: Ledger,
    recovery: Recovery,
) -> None:
    product = make_product(stock=1_000, price="2.00")
    keys = [f"restart-{uuid.uuid4().hex}" for _ in range(CLIENTS * ORDERS_PER_CLIENT)]
    answered: dict[str, list[int]] = {key: [] for key in keys}  # order ids per key
    attempts: dict[str, int] = dict.fromkeys(keys, 0)
    lock = threading.Lock()
    failures: list[str] = []

    def client(my_keys: list[str]) -> None:
        for key in my_keys:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    attempts[key] += 1
                try:
                    response = buyer.order([(product["id"], 1)], key=key, timeout=15)
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if response.status_code == 201:
                    with lock:
                        answered[key].append(response.json()["id"])
                    break
                if response.status_code not in (409, 502, 503, 504):
                    failures.append(f"{key}: {response.status_code} {response.text}")
                    break
                time.sleep(0.1)
            time.sleep(0.05)

    threads = [
        threading.Thread(target=client, args=(keys[i::CLIENTS],), daemon=True)
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    stack.kill("gateway")
    time.sleep(0.5)
    stack.start("gateway")
    for thread in threads:
        thread.join(120)

    assert failures == []
    assert all(len(ids) == 1 for ids in answered.values()), answered
    assert sum(attempts.values()) > len(keys), "no client had to retry: the fault missed"
    recovery.run()
    orders = ledger.orders(buyer.id)
    live = [o for o in orders if o["status"] == "pending"]
    assert sorted(o["idempotency_key"] for o in live) == sorted(keys)
    assert sorted(o["id"] for o in live) == sorted(ids[0] for ids in answered.values())
    view = ledger.assert_invariant({product["id"]: 1_000}, [buyer.id])
    assert view[product["id"]] == {
        "available": 1_000 - len(keys),
        "held": 0,
        "committed": len(keys),
    }
