"""The scenarios of issue 8 and DESIGN §8, and the correctness check of the contention run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg2

from shopbench.environment import BenchEnvironment
from shopbench.seed import SeedData
from shopbench.wrk import Load, WrkResult

# Every scenario key, in run order (checked against build() when the plan is made).
KEYS = (
    "live_direct",
    "product_direct",
    "product_gateway",
    "product_queuepool",
    "product_direct_serial",
    "product_gateway_serial",
    "product_list_gateway",
    "users_me_gateway",
    "order_gateway",
    "order_contention",
    "auth_token_gateway",
)
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    process: str  # whose URL the load hits: gateway, catalog, catalog_queuepool
    load: Load
    connections: int
    warmup: bool = True  # False where a warm-up would change what is measured (scarce stock)
    time_bound: float | None = None  # for a scenario bounded by answers: its safety time limit
    scale: float = 1.0  # share of the per-scenario duration
    group: str | None = None  # scenarios of one group run in interleaved rounds

    def duration(self, default: float) -> float:
        if self.load.max_responses and self.time_bound:
            return self.time_bound
        return max(1.0, default * self.scale)


def build(env: BenchEnvironment, seed: SeedData, connections: int | None) -> list[Scenario]:
    """In run order. Direct, gateway and QueuePool reads run back to back so they see the same
    machine; `connections` overrides every scenario's default when given."""

    def conns(default: int) -> int:
        return connections or default

    ids = tuple(seed.product_ids)
    product = "/products/{id}"
    listing = (
        f"/products/?category_id={seed.category_id}&min_price=10&max_price=150&in_stock=true"
        "&tag=even&q=widget&sort=-price&page=1&page_size=20"
    )
    order_body = '{"items": [{"product_id": {id}, "quantity": 1}]}'  # request.lua fills {id}
    login_body = urlencode({"username": seed.username, "password": seed.password})
    plan = [
        # The floor: FastAPI + middleware + access log, no database, no auth.
        Scenario(
            "live_direct",
            "GET /health/live, catalog direct (framework floor: no database)",
            "catalog",
            Load(env.url("catalog"), "/health/live"),
            conns(16),
            scale=0.5,
        ),
        Scenario(
            "product_direct",
            "GET /products/{id}, catalog direct (NullPool → PgBouncer)",
            "catalog",
            Load(env.url("catalog"), product, ids=ids),
            conns(16),
            group="product",
        ),
        Scenario(
            "product_gateway",
            "GET /products/{id} through the gateway",
            "gateway",
            Load(env.url("gateway"), product, ids=ids),
            conns(16),
            group="product",
        ),
        Scenario(
            "product_queuepool",
            f"GET /products/{{id}}, catalog direct (QueuePool({env.pool_size}) → PostgreSQL)",
            "catalog_queuepool",
            Load(env.url("catalog_queuepool"), product, ids=ids),
            conns(16),
            group="product",
        ),
        # One request at a time: latency without queueing, for "p50 added by the gateway".
        Scenario(
            "product_direct_serial",
            "GET /products/{id}, catalog direct, 1 connection",
            "catalog",
            Load(env.url("catalog"), product, ids=ids),
            1,
            scale=0.5,
            group="serial",
        ),
        Scenario(
            "product_gateway_serial",
            "GET /products/{id} through the gateway, 1 connection",
            "gateway",
            Load(env.url("gateway"), product, ids=ids),
            1,
            scale=0.5,
            group="serial",
        ),
        Scenario(
            "product_list_gateway",
            "GET /products/ with filters (category, price range, in stock, tag, q, sort) via gateway",
            "gateway",
            Load(env.url("gateway"), listing),
            conns(16),
        ),
        Scenario(
            "users_me_gateway",
            "GET /users/me through the gateway",
            "gateway",
            Load(env.url("gateway"), "/users/me", token=seed.user_token),
            conns(16),
        ),
        Scenario(
            "order_gateway",
            "POST /orders/ through the gateway (1 item, large stock, 100 products)",
            "gateway",
            Load(
                env.url("gateway"),
                "/orders/",
                method="POST",
                ids=ids,
                body=order_body,
                content_type=JSON,
                token=seed.user_token,
            ),
            conns(16),
        ),
        Scenario(
            "order_contention",
            f"POST /orders/ for the last {seed.scarce_stock} units of one product (contention)",
            "gateway",
            Load(
                env.url("gateway"),
                "/orders/",
                method="POST",
                ids=(seed.scarce_product_id,),
                body=order_body,
                content_type=JSON,
                token=seed.user_token,
                # N = 2K orders race for the last K units; bounded by answers, not only time
                max_responses=2 * seed.scarce_stock,
            ),
            conns(32),
            warmup=False,
            time_bound=30,
        ),
        Scenario(
            "auth_token_gateway",
            "POST /auth/token through the gateway (Argon2id 19 MiB, t=2, p=1)",
            "gateway",
            Load(
                env.url("gateway"), "/auth/token", method="POST", body=login_body, content_type=FORM
            ),
            conns(8),
        ),
    ]
    assert tuple(s.key for s in plan) == KEYS
    return plan


def contention_check(env: BenchEnvironment, seed: SeedData, result: WrkResult) -> dict[str, Any]:
    """No oversell: exactly as many 201s as units sold, stock never below 0, and the stock
    invariant of DESIGN §5 (initial = available + held + committed) read from the database."""
    product_id = seed.scarce_product_id
    created, accepted, conflicts = result.count(201), result.count(202), result.count(409)
    # A 202 (outcome not known yet: services/orders/README.md) settles by itself, at the latest
    # when orders' recovery job runs after its placing deadline (60 s + 15 s by default).
    deadline = time.monotonic() + (90 if accepted else 10)
    while True:  # let requests wrk cut off at the end finish on the server
        facts = _read_facts(env.admin_dsn, product_id)
        if (facts["held"] == 0 and facts["placing_orders"] == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    initial = seed.scarce_stock
    sold = initial - facts["available"]
    checks = {
        "stock never below 0": facts["available"] >= 0,
        # every 201 is sold; a 202 may have ended either way
        "201s <= units sold <= 201s + 202s": created <= sold <= created + accepted,
        "sold out (all units sold, not more)": facts["available"] == 0 and sold == initial,
        "initial == available + held + committed": (
            initial == facts["available"] + facts["held"] + facts["committed"]
        ),
        "pending orders == units sold": facts["pending_orders"] == sold
        and facts["pending_quantity"] == sold,
        "no order stuck in placing": facts["placing_orders"] == 0,
        "only 201, 202 and 409 answers": created + accepted + conflicts == result.requests,
    }
    return {
        "initial_stock": initial,
        "answers": {
            "201": created,
            "202": accepted,
            "409": conflicts,
            "other": result.requests - created - accepted - conflicts,
        },
        "database": facts,
        "checks": checks,
        "ok": all(checks.values()),
    }


def _read_facts(dsn: str, product_id: int) -> dict[str, int]:
    conn = psycopg2.connect(dsn)
    # one snapshot for both schemas, so an order moving placing -> pending is never seen twice
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT stock_quantity FROM catalog.products WHERE id = %s", (product_id,))
            row = cur.fetchone()
            assert row is not None
            available = int(row[0])
            cur.execute(
                "SELECT r.status, coalesce(sum(i.quantity), 0) FROM catalog.reservation_items i "
                "JOIN catalog.reservations r ON r.id = i.reservation_id "
                "WHERE i.product_id = %s GROUP BY r.status",
                (product_id,),
            )
            by_status = {str(s): int(q) for s, q in cur.fetchall()}
            cur.execute(
                "SELECT count(DISTINCT o.id), coalesce(sum(i.quantity), 0) FROM orders.orders o "
                "JOIN orders.order_items i ON i.order_id = o.id "
                "WHERE i.product_id = %s AND o.status = 'pending'",
                (product_id,),
            )
            pending = cur.fetchone()
            assert pending is not None
            cur.execute("SELECT count(*) FROM orders.orders WHERE status = 'placing'")
            placing = cur.fetchone()
            assert placing is not None
    finally:
        conn.close()
    return {
        "available": available,
        "held": by_status.get("held", 0),
        "committed": by_status.get("committed", 0),
        "released": by_status.get("released", 0) + by_status.get("expired", 0),
        "pending_orders": int(pending[0]),
        "pending_quantity": int(pending[1]),
        "placing_orders": int(placing[0]),
    }
