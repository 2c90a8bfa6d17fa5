"""Reservations under concurrency: a real uvicorn process, through PgBouncer, many HTTP clients.

Invariant for every product: initial stock = available + held + committed; available >= 0."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from catalog.models import Product, Reservation, ReservationItem
from shop_dev.testing import ShopDatabase

from .conftest import ProductFactory

T = TypeVar("T")


@pytest.fixture
def http(catalog_url: str, shop_db: ShopDatabase) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with httpx.Client(
        base_url=catalog_url,
        headers={"X-Service-Token": shop_db.internal_api_token},
        timeout=30,
        limits=limits,
    ) as client:
        yield client


def run_concurrently(count: int, task: Callable[[int], T], workers: int = 50) -> list[T]:
    """Run task(0..count-1) on `workers` threads released together by a barrier."""
    barrier = threading.Barrier(min(count, workers))

    def start(i: int) -> T:
        if i < workers:
            barrier.wait(timeout=30)
        return task(i)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(start, range(count)))


def reserve(http: httpx.Client, items: list[tuple[int, int]]) -> httpx.Response:
    return http.post(
        "/internal/reservations",
        json={
            "reservation_id": str(uuid.uuid4()),
            "items": [{"product_id": p, "quantity": q} for p, q in items],
        },
    )


def ledger(db: Session, product_id: int) -> dict[str, int]:
    """available (the stock column) and the units in held and committed reservations."""
    db.expire_all()
    rows = db.execute(
        select(Reservation.status, func.coalesce(func.sum(ReservationItem.quantity), 0))
        .join(ReservationItem, ReservationItem.reservation_id == Reservation.id)
        .where(ReservationItem.product_id == product_id)
        .group_by(Reservation.status)
    ).all()
    by_status: dict[str, int] = {status: int(total) for status, total in rows}
    available = db.scalars(select(Product.stock_quantity).where(Product.id == product_id)).one()
    return {
        "available": int(available),
        "held": by_status.get("held", 0),
        "committed": by_status.get("committed", 0),
    }


def test_fifty_concurrent_reservations_for_ten_units_give_exactly_ten(
    http: httpx.Client, db: Session, make_product: ProductFactory
) -> None:
    product = make_product(stock_quantity=10)

    responses = run_concurrently(50, lambda _: reserve(http, [(product["id"], 1)]))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 10, 409: 40}
    assert all(
        r.json()["short"] == [{"product_id": product["id"], "requested": 1, "available": 0}]
        for r in responses
        if r.status_code == 409
    )
    assert ledger(db, product["id"]) == {"available": 0, "held": 10, "committed": 0}


@pytest.mark.parametrize("commit", [False, True])
def test_concurrent_requests_with_one_id_reserve_once_and_all_answer_it(
    http: httpx.Client, db: Session, make_product: ProductFactory, commit: bool
) -> None:
    product = make_product(stock_quantity=10)
    rid = uuid.uuid4()
    body = {"reservation_id": str(rid), "items": [{"product_id": product["id"], "quantity": 3}]}

    responses = run_concurrently(
        20,
        lambda _: http.post(
            "/internal/reservations", params={"commit": str(commit).lower()}, json=body
        ),
        workers=20,
    )

    assert Counter(r.status_code for r in responses) == {201: 20}, responses[0].text
    assert len({r.text for r in responses}) == 1
    assert responses[0].json()["status"] == ("committed" if commit else "held")
    expected = {"available": 7, "held": 0 if commit else 3, "committed": 3 if commit else 0}
    assert ledger(db, product["id"]) == expected
    lines = db.scalars(
        select(ReservationItem.quantity).where(ReservationItem.reservation_id == rid)
    ).all()
    assert lines == [3]


def test_releases_racing_the_creates_of_their_ids_leave_no_stock_held(
    http: httpx.Client, db: Session, make_product: ProductFactory
) -> None:
    product = make_product(stock_quantity=20)
    rids = [str(uuid.uuid4()) for _ in range(20)]

    def act(i: int) -> int:
        rid = rids[i // 2]
        if i % 2:
            released = http.post(f"/internal/reservations/{rid}/release")
            assert released.json()["status"] == "released", released.text
            return released.status_code
        return http.post(
            "/internal/reservations",
            json={"reservation_id": rid, "items": [{"product_id": product["id"], "quantity": 1}]},
        ).status_code

    results = run_concurrently(40, act, workers=40)

    assert {r for i, r in enumerate(results) if i % 2} == {200}
    assert {r for i, r in enumerate(results) if i % 2 == 0} <= {201, 409}
    assert ledger(db, product["id"]) == {"available": 20, "held": 0, "committed": 0}


def test_interleaved_reserve_commit_release_keeps_the_invariant(
    http: httpx.Client, db: Session, make_product: ProductFactory
) -> None:
    products = [make_product(stock_quantity=30)["id"] for _ in range(3)]
    seeds = random.Random(20261126)
    plans = [
        (
            [(p, seeds.randint(1, 3)) for p in seeds.sample(products, seeds.randint(1, 3))],
            seeds.choice(["release", "commit", "commit-then-release", "keep"]),
        )
        for _ in range(120)
    ]
    seen: list[int] = []

    def act(i: int) -> None:
        items, then = plans[i]
        created = reserve(http, items)
        seen.append(created.status_code)
        if created.status_code != 201:
            return
        rid = created.json()["reservation_id"]
        for move in then.split("-then-") if then != "keep" else []:
            response = http.post(f"/internal/reservations/{rid}/{move}")
            seen.append(response.status_code)

    run_concurrently(len(plans), act, workers=24)

    assert set(seen) <= {200, 201, 409}
    assert seen.count(201) > 0
    for product_id in products:
        books = ledger(db, product_id)
        assert books["available"] >= 0
        assert books["available"] + books["held"] + books["committed"] == 30, books


def test_releases_racing_the_sweeper_restock_exactly_once(
    http: httpx.Client, db: Session, make_product: ProductFactory
) -> None:
    product = make_product(stock_quantity=40)
    rids = [reserve(http, [(product["id"], 1)]).json()["reservation_id"] for _ in range(40)]
    db.execute(
        text(
            "UPDATE catalog.reservations SET expires_at = now() - interval '1 second' "
            "WHERE id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": rids},
    )
    db.commit()

    def act(i: int) -> Any:
        if i % 5 == 0:
            return http.post("/internal/reservations/sweep").status_code
        return http.post(f"/internal/reservations/{rids[i]}/release").json()["status"]

    results = run_concurrently(40, act, workers=40)

    assert {r for i, r in enumerate(results) if i % 5 == 0} == {200}
    assert {r for i, r in enumerate(results) if i % 5} <= {"released", "expired"}
    assert ledger(db, product["id"]) == {"available": 40, "held": 0, "committed": 0}


def test_opposite_order_multi_product_reservations_never_deadlock(
    http: httpx.Client, db: Session, make_product: ProductFactory, catalog_url: str
) -> None:
    first, second = (
        make_product(stock_quantity=10_000)["id"],
        make_product(stock_quantity=10_000)["id"],
    )

    problems: list[str] = []

    def act(i: int) -> list[int]:
        items = [(first, 1), (second, 2)] if i % 2 else [(second, 2), (first, 1)]
        created = reserve(http, items)
        if created.status_code != 201:
            problems.append(created.text)
            return [created.status_code]
        released = http.post(f"/internal/reservations/{created.json()['reservation_id']}/release")
        return [created.status_code, released.status_code]

    # Taking the locks in request order instead fails this with ~190 of 200 deadlock 503s.
    results = run_concurrently(200, act, workers=8)

    assert Counter(code for pair in results for code in pair) == {201: 200, 200: 200}, problems[:3]
    assert ledger(db, first) == {"available": 10_000, "held": 0, "committed": 0}
    assert ledger(db, second) == {"available": 10_000, "held": 0, "committed": 0}
