"""/internal/reservations: all-or-nothing stock holds, idempotent moves, expiry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.orm import Session

from catalog.config import CatalogSettings
from catalog.main import create_app
from catalog.models import Product, Reservation, ReservationItem
from shop_common.db import QueryCounter, count_queries
from shop_dev.testing import ShopDatabase

from .conftest import ProductFactory


def stock(db: Session, product_id: int) -> int:
    db.expire_all()
    return int(db.scalars(select(Product.stock_quantity).where(Product.id == product_id)).one())


def reserve(
    internal: TestClient,
    items: list[tuple[int, int]],
    reservation_id: uuid.UUID | None = None,
    **extra: Any,
) -> Any:
    return internal.post(
        "/internal/reservations",
        json={
            "reservation_id": str(reservation_id or uuid.uuid4()),
            "items": [{"product_id": p, "quantity": q} for p, q in items],
            **extra,
        },
    )


def reserve_and_commit(
    internal: TestClient, items: list[tuple[int, int]], reservation_id: uuid.UUID
) -> Any:
    return internal.post(
        "/internal/reservations",
        params={"commit": "true"},
        json={
            "reservation_id": str(reservation_id),
            "items": [{"product_id": p, "quantity": q} for p, q in items],
        },
    )


def make_overdue(db: Session, reservation_id: str) -> None:
    db.execute(
        text(
            "UPDATE catalog.reservations SET expires_at = now() - interval '1 second' "
            "WHERE id = :id"
        ),
        {"id": reservation_id},
    )
    db.commit()


class TestCreateReservation:
    def test_reserving_holds_stock_and_answers_the_contract(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        mug = make_product(price="7.25", stock_quantity=10)
        pen = make_product(price="1.10", stock_quantity=3)
        reservation_id = uuid.uuid4()
        before = datetime.now(UTC)

        response = reserve(internal, [(pen["id"], 3), (mug["id"], 4)], reservation_id)

        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"reservation_id", "status", "expires_at", "items"}
        assert (body["reservation_id"], body["status"]) == (str(reservation_id), "held")
        assert body["items"] == [
            {
                "product_id": p["id"],
                "name": p["name"],
                "sku": p["sku"],
                "quantity": q,
                "unit_price": p["price"],
            }
            for p, q in sorted([(mug, 4), (pen, 3)], key=lambda pq: pq[0]["id"])
        ]
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=890) < expires_at < before + timedelta(seconds=910)
        assert (stock(db, mug["id"]), stock(db, pen["id"])) == (6, 0)

    def test_ttl_seconds_sets_the_expiry(
        self, internal: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product()
        before = datetime.now(UTC)

        response = reserve(internal, [(product["id"], 1)], ttl_seconds=60)

        expires_at = datetime.fromisoformat(response.json()["expires_at"])
        assert before + timedelta(seconds=50) < expires_at < before + timedelta(seconds=70)

    def test_the_same_product_twice_is_merged(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)

        response = reserve(internal, [(product["id"], 2), (product["id"], 3)])

        assert [(i["product_id"], i["quantity"]) for i in response.json()["items"]] == [
            (product["id"], 5)
        ]
        assert stock(db, product["id"]) == 5

    def test_insufficient_stock_is_409_listing_every_short_product_and_holds_nothing(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        plenty = make_product(stock_quantity=10)
        few = make_product(stock_quantity=2)
        none = make_product(stock_quantity=0)
        reservation_id = uuid.uuid4()

        response = reserve(
            internal, [(plenty["id"], 1), (few["id"], 3), (none["id"], 1)], reservation_id
        )

        assert response.status_code == 409
        body = response.json()
        assert body["type"] == "/problems/insufficient-stock"
        assert body["short"] == [
            {"product_id": few["id"], "requested": 3, "available": 2},
            {"product_id": none["id"], "requested": 1, "available": 0},
        ]
        assert [stock(db, p["id"]) for p in (plenty, few, none)] == [10, 2, 0]
        assert db.get(Reservation, reservation_id) is None

    def test_unknown_and_inactive_products_are_422(
        self, admin: TestClient, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        active = make_product(stock_quantity=5)
        inactive = make_product(stock_quantity=5)
        admin.delete(f"/products/{inactive['id']}")

        response = reserve(internal, [(active["id"], 1), (inactive["id"], 1), (2_000_000_000, 1)])

        assert response.status_code == 422
        body = response.json()
        assert body["type"] == "/problems/unknown-products"
        assert (body["unknown"], body["inactive"]) == ([2_000_000_000], [inactive["id"]])
        assert stock(db, active["id"]) == 5

    def test_same_id_and_items_again_answers_the_same_and_holds_once(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        reservation_id = uuid.uuid4()

        first = reserve(internal, [(product["id"], 4)], reservation_id)
        again = reserve(internal, [(product["id"], 1), (product["id"], 3)], reservation_id)

        assert again.status_code == 201
        assert again.json() == first.json()
        assert stock(db, product["id"]) == 6

    def test_same_id_with_other_items_is_409(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        reservation_id = uuid.uuid4()
        reserve(internal, [(product["id"], 4)], reservation_id)

        response = reserve(internal, [(product["id"], 5)], reservation_id)

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/reservation-mismatch"
        assert stock(db, product["id"]) == 6

    def test_a_failed_reservation_id_can_be_retried(
        self, admin: TestClient, internal: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=1)
        reservation_id = uuid.uuid4()
        assert reserve(internal, [(product["id"], 2)], reservation_id).status_code == 409
        admin.patch(f"/products/{product['id']}", json={"stock_quantity": 2})

        response = reserve(internal, [(product["id"], 2)], reservation_id)

        assert response.status_code == 201


class TestReserveAndCommit:
    """`?commit=true`: orders' placement reserves and commits in one call."""

    def test_reserving_with_commit_answers_committed_and_takes_the_stock(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(price="4.50", stock_quantity=5)
        rid = uuid.uuid4()

        response = internal.post(
            "/internal/reservations?commit=true",
            json={
                "reservation_id": str(rid),
                "items": [{"product_id": product["id"], "quantity": 2}],
            },
        )

        assert response.status_code == 201
        body = response.json()
        assert (body["reservation_id"], body["status"]) == (str(rid), "committed")
        assert body["items"] == [
            {
                "product_id": product["id"],
                "name": product["name"],
                "sku": product["sku"],
                "quantity": 2,
                "unit_price": "4.50",
            }
        ]
        assert stock(db, product["id"]) == 3
        assert internal.get(f"/internal/reservations/{rid}").json() == body
        again = internal.post(f"/internal/reservations/{rid}/commit")
        assert (again.status_code, again.json()) == (200, body)

    def test_a_retry_answers_the_same_and_takes_the_stock_once(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()
        body = {"reservation_id": str(rid), "items": [{"product_id": product["id"], "quantity": 2}]}

        first = internal.post("/internal/reservations?commit=true", json=body)
        again = internal.post("/internal/reservations?commit=true", json=body)

        assert again.status_code == 201
        assert again.json() == first.json()
        assert stock(db, product["id"]) == 3

    def test_a_held_reservation_with_the_same_items_is_committed(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()
        held = reserve(internal, [(product["id"], 2)], rid)
        assert held.json()["status"] == "held"

        response = reserve_and_commit(internal, [(product["id"], 2)], rid)

        assert (response.status_code, response.json()["status"]) == (201, "committed")
        assert db.scalars(select(Reservation.status).where(Reservation.id == rid)).one() == (
            "committed"
        )
        assert stock(db, product["id"]) == 3

    def test_a_released_reservation_stays_released_and_takes_nothing(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()
        internal.post(f"/internal/reservations/{rid}/release")  # the caller gave up on it

        response = reserve_and_commit(internal, [(product["id"], 2)], rid)

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/reservation-mismatch"
        assert stock(db, product["id"]) == 5

    def test_insufficient_stock_is_409_and_commits_nothing(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        plenty = make_product(stock_quantity=10)
        few = make_product(stock_quantity=1)
        rid = uuid.uuid4()

        response = reserve_and_commit(internal, [(plenty["id"], 1), (few["id"], 2)], rid)

        assert response.status_code == 409
        assert response.json()["short"] == [
            {"product_id": few["id"], "requested": 2, "available": 1}
        ]
        assert [stock(db, p["id"]) for p in (plenty, few)] == [10, 1]
        assert db.get(Reservation, rid) is None


@contextmanager
def count_transactions(engine: Engine) -> Iterator[QueryCounter]:
    """Count the transactions (BEGIN) opened on `engine` inside the block."""
    counter = QueryCounter()

    def _begin(_connection: Connection) -> None:
        counter.value += 1

    event.listen(engine, "begin", _begin)
    try:
        yield counter
    finally:
        event.remove(engine, "begin", _begin)


def lines_of(db: Session, reservation_id: uuid.UUID) -> list[tuple[int, int]]:
    return [
        (line.product_id, line.quantity)
        for line in db.scalars(
            select(ReservationItem).where(ReservationItem.reservation_id == reservation_id)
        )
    ]


def wait_until_blocked(admin_engine: Engine, marker: str) -> None:
    """Until a statement whose text contains `marker` waits for a lock (psycopg2 inlines the
    parameters, so a reservation id finds its request's statement)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with admin_engine.connect() as conn:  # a new transaction: pg_stat_activity is fresh
            waiting = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE :marker"
                ),
                {"marker": f"%{marker}%"},
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"no statement with {marker} waited for a lock")


def reserve_behind(
    admin_engine: Engine,
    internal: TestClient,
    lines: list[tuple[int, int]],
    rid: uuid.UUID,
    *writes: tuple[str, dict[str, Any]],
) -> Any:
    """Reserve `lines` as `rid` while another transaction holds `writes` uncommitted: the request is
    sent, seen waiting on that transaction's lock, and only then does the transaction commit."""
    with admin_engine.connect() as other, ThreadPoolExecutor(1) as pool:
        for sql, params in writes:
            other.execute(text(sql), params)
        late = pool.submit(reserve, internal, lines, rid)
        wait_until_blocked(admin_engine, str(rid))
        other.commit()
        return late.result(timeout=30)


class TestOneProductInOneStatement:
    """One product (nearly every order) is one statement in autocommit: no BEGIN, no COMMIT."""

    @pytest.mark.parametrize("commit", [False, True])
    def test_a_one_product_reservation_is_one_statement_and_no_transaction(
        self,
        internal: TestClient,
        engine: Engine,
        db: Session,
        make_product: ProductFactory,
        commit: bool,
    ) -> None:
        product = make_product(price="2.50", stock_quantity=5)
        rid = uuid.uuid4()

        # `engine` is the app's; its listeners also see the statements run on the AUTOCOMMIT
        # reader derived from it (shop_common.db.fetch_one calls them).
        with count_queries(engine) as statements, count_transactions(engine) as transactions:
            response = internal.post(
                "/internal/reservations",
                params={"commit": str(commit).lower()},
                json={
                    "reservation_id": str(rid),
                    "items": [{"product_id": product["id"], "quantity": 2}],
                },
            )

        assert response.status_code == 201
        assert (statements.value, transactions.value) == (1, 0)
        body = response.json()
        assert body["status"] == ("committed" if commit else "held")
        assert body["items"] == [
            {
                "product_id": product["id"],
                "name": product["name"],
                "sku": product["sku"],
                "quantity": 2,
                "unit_price": "2.50",
            }
        ]
        assert internal.get(f"/internal/reservations/{rid}").json() == body
        assert stock(db, product["id"]) == 3

    def test_several_products_still_take_one_transaction(
        self, internal: TestClient, engine: Engine, make_product: ProductFactory
    ) -> None:
        first, second = make_product(stock_quantity=5), make_product(stock_quantity=5)

        with count_queries(engine) as statements, count_transactions(engine) as transactions:
            response = reserve(internal, [(first["id"], 1), (second["id"], 1)])

        assert response.status_code == 201
        assert (statements.value, transactions.value) == (3, 1)  # check, then one per product

    def test_the_line_is_written_beside_its_reservation_under_a_non_deferred_foreign_key(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        # A NOT DEFERRABLE foreign key is checked at the end of each statement, so the line's
        # reference to the reservation inserted in the same statement must already hold there.
        deferrable = db.scalar(
            text(
                "SELECT condeferrable FROM pg_constraint "
                "WHERE conname = 'fk_reservation_items_reservation_id_reservations'"
            )
        )
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()

        response = reserve(internal, [(product["id"], 3)], rid)

        assert deferrable is False
        assert response.status_code == 201
        reservation = db.get(Reservation, rid)
        assert reservation is not None
        assert reservation.status == "held"
        assert lines_of(db, rid) == [(product["id"], 3)]

    @pytest.mark.parametrize("commit", [False, True])
    def test_insufficient_stock_is_one_statement_and_writes_nothing(
        self,
        internal: TestClient,
        engine: Engine,
        db: Session,
        make_product: ProductFactory,
        commit: bool,
    ) -> None:
        product = make_product(stock_quantity=2)
        rid = uuid.uuid4()

        with count_queries(engine) as statements:
            response = internal.post(
                "/internal/reservations",
                params={"commit": str(commit).lower()},
                json={
                    "reservation_id": str(rid),
                    "items": [{"product_id": product["id"], "quantity": 3}],
                },
            )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/insufficient-stock"
        assert response.json()["short"] == [
            {"product_id": product["id"], "requested": 3, "available": 2}
        ]
        assert statements.value == 1
        assert stock(db, product["id"]) == 2
        assert db.get(Reservation, rid) is None
        assert lines_of(db, rid) == []

    def test_unknown_or_inactive_product_is_422_and_writes_nothing(
        self,
        admin: TestClient,
        internal: TestClient,
        engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        inactive = make_product(stock_quantity=5)
        admin.delete(f"/products/{inactive['id']}")
        rids = [uuid.uuid4(), uuid.uuid4()]

        with count_queries(engine) as statements:
            unknown_answer = reserve(internal, [(2_000_000_000, 1)], rids[0])
            inactive_answer = reserve(internal, [(inactive["id"], 1)], rids[1])

        assert [unknown_answer.status_code, inactive_answer.status_code] == [422, 422]
        assert [
            (a.json()["unknown"], a.json()["inactive"]) for a in (unknown_answer, inactive_answer)
        ] == [
            ([2_000_000_000], []),
            ([], [inactive["id"]]),
        ]
        assert statements.value == 2
        assert stock(db, inactive["id"]) == 5
        assert [db.get(Reservation, rid) for rid in rids] == [None, None]

    def test_a_sold_out_product_is_409_without_waiting_for_its_row_lock(
        self,
        internal: TestClient,
        admin_engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        product = make_product(stock_quantity=0)
        with admin_engine.connect() as holder, ThreadPoolExecutor(1) as pool:
            holder.execute(
                text("UPDATE catalog.products SET price = price WHERE id = :id"),
                {"id": product["id"]},
            )  # holds the row lock until the rollback below
            try:
                response = pool.submit(reserve, internal, [(product["id"], 1)]).result(timeout=3)
            finally:
                holder.rollback()

        assert response.status_code == 409
        assert response.json()["short"] == [
            {"product_id": product["id"], "requested": 1, "available": 0}
        ]

    def test_stock_sold_while_the_statement_waits_is_409_with_the_stock_left(
        self,
        internal: TestClient,
        admin_engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        product = make_product(stock_quantity=1)
        rid = uuid.uuid4()
        sold = (
            "UPDATE catalog.products SET stock_quantity = 0 WHERE id = :id",
            {"id": product["id"]},
        )
        # its snapshot still shows 1 unit
        response = reserve_behind(admin_engine, internal, [(product["id"], 1)], rid, sold)

        assert response.status_code == 409
        assert response.json()["short"] == [
            {"product_id": product["id"], "requested": 1, "available": 0}
        ]
        assert stock(db, product["id"]) == 0
        assert db.get(Reservation, rid) is None

    def test_a_product_deactivated_while_the_statement_waits_is_422(
        self,
        internal: TestClient,
        admin_engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()
        off = (
            "UPDATE catalog.products SET is_active = false WHERE id = :id",
            {"id": product["id"]},
        )
        response = reserve_behind(admin_engine, internal, [(product["id"], 1)], rid, off)

        assert response.status_code == 422
        assert (response.json()["unknown"], response.json()["inactive"]) == ([], [product["id"]])
        assert stock(db, product["id"]) == 5
        assert db.get(Reservation, rid) is None

    def test_losing_the_race_for_the_id_answers_the_winners_reservation_and_takes_nothing(
        self,
        internal: TestClient,
        admin_engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        product = make_product(price="3.00", stock_quantity=5)
        rid = uuid.uuid4()
        # What a concurrent request with this id writes, not yet committed.
        winner = (
            (
                "INSERT INTO catalog.reservations (id, status, expires_at) "
                "VALUES (:id, 'held', now() + interval '900 seconds')",
                {"id": rid},
            ),
            (
                "INSERT INTO catalog.reservation_items "
                "(reservation_id, product_id, quantity, unit_price, name, sku) "
                "VALUES (:id, :product_id, 2, 3.00, :name, :sku)",
                {
                    "id": rid,
                    "product_id": product["id"],
                    "name": product["name"],
                    "sku": product["sku"],
                },
            ),
            (
                "UPDATE catalog.products SET stock_quantity = 3 WHERE id = :id",
                {"id": product["id"]},
            ),
        )
        response = reserve_behind(admin_engine, internal, [(product["id"], 2)], rid, *winner)

        assert response.status_code == 201, response.text
        assert response.json() == internal.get(f"/internal/reservations/{rid}").json()
        assert response.json()["items"][0]["quantity"] == 2
        assert stock(db, product["id"]) == 3  # taken once, by the winner
        assert lines_of(db, rid) == [(product["id"], 2)]

    def test_losing_the_race_for_the_id_with_other_items_is_409_and_takes_nothing(
        self,
        internal: TestClient,
        admin_engine: Engine,
        db: Session,
        make_product: ProductFactory,
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()
        # release-before-reserve's tombstone, not yet committed
        tombstone = (
            "INSERT INTO catalog.reservations (id, status, expires_at) "
            "VALUES (:id, 'released', now())",
            {"id": rid},
        )
        response = reserve_behind(admin_engine, internal, [(product["id"], 2)], rid, tombstone)

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/reservation-mismatch"
        assert stock(db, product["id"]) == 5
        assert lines_of(db, rid) == []


class TestReservationMoves:
    def test_commit_is_idempotent_and_keeps_the_stock_taken(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = reserve(internal, [(product["id"], 2)]).json()["reservation_id"]

        first = internal.post(f"/internal/reservations/{rid}/commit")
        again = internal.post(f"/internal/reservations/{rid}/commit")

        assert (first.status_code, first.json()["status"]) == (200, "committed")
        assert again.json() == first.json()
        assert stock(db, product["id"]) == 3

    def test_releasing_twice_restores_stock_once(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = reserve(internal, [(product["id"], 2)]).json()["reservation_id"]

        first = internal.post(f"/internal/reservations/{rid}/release")
        again = internal.post(f"/internal/reservations/{rid}/release")

        assert (first.status_code, first.json()["status"]) == (200, "released")
        assert (again.status_code, again.json()["status"]) == (200, "released")
        assert stock(db, product["id"]) == 5

    def test_releasing_a_committed_reservation_restocks(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = reserve(internal, [(product["id"], 2)]).json()["reservation_id"]
        internal.post(f"/internal/reservations/{rid}/commit")

        response = internal.post(f"/internal/reservations/{rid}/release")

        assert response.json()["status"] == "released"
        assert stock(db, product["id"]) == 5

    def test_commit_after_release_is_409(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = reserve(internal, [(product["id"], 2)]).json()["reservation_id"]
        internal.post(f"/internal/reservations/{rid}/release")

        response = internal.post(f"/internal/reservations/{rid}/commit")

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/invalid-reservation-transition"
        assert response.json()["reservation_status"] == "released"
        assert stock(db, product["id"]) == 5

    def test_get_shows_status_and_items(
        self, internal: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product()
        created = reserve(internal, [(product["id"], 1)]).json()

        shown = internal.get(f"/internal/reservations/{created['reservation_id']}")

        assert shown.json() == created

    def test_unknown_reservation_is_404(self, internal: TestClient) -> None:
        rid = uuid.uuid4()
        for response in (
            internal.get(f"/internal/reservations/{rid}"),
            internal.post(f"/internal/reservations/{rid}/commit"),
        ):
            assert response.status_code == 404
            assert response.json()["type"] == "/problems/reservation-not-found"

    def test_releasing_an_unknown_id_makes_a_late_create_take_no_stock(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=5)
        rid = uuid.uuid4()

        released = internal.post(f"/internal/reservations/{rid}/release")
        late = reserve(internal, [(product["id"], 2)], reservation_id=rid)

        assert released.status_code == 200
        assert (released.json()["status"], released.json()["items"]) == ("released", [])
        assert late.status_code == 409
        assert late.json()["type"] == "/problems/reservation-mismatch"
        assert stock(db, product["id"]) == 5


class TestExpiry:
    def test_sweep_expires_overdue_held_reservations_and_restocks(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        overdue = [reserve(internal, [(product["id"], 2)]).json() for _ in range(2)]
        current = reserve(internal, [(product["id"], 3)]).json()
        for reservation in overdue:
            make_overdue(db, reservation["reservation_id"])

        swept = internal.post("/internal/reservations/sweep")
        again = internal.post("/internal/reservations/sweep")

        # A whole-repo run also has the stack's catalog sweeping this database every 30 s, so
        # the count is the part it may share; the outcome below is exact either way.
        assert swept.status_code == 200
        assert swept.json()["expired"] in {0, 1, 2}
        assert again.json() == {"expired": 0}
        assert stock(db, product["id"]) == 7
        statuses = [
            internal.get(f"/internal/reservations/{r['reservation_id']}").json()["status"]
            for r in [*overdue, current]
        ]
        assert statuses == ["expired", "expired", "held"]

    def test_an_overdue_reservation_cannot_be_committed(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        rid = reserve(internal, [(product["id"], 2)]).json()["reservation_id"]
        make_overdue(db, rid)

        before_sweep = internal.post(f"/internal/reservations/{rid}/commit")
        internal.post("/internal/reservations/sweep")
        after_sweep = internal.post(f"/internal/reservations/{rid}/commit")

        assert before_sweep.status_code == 409
        problem_for = {  # "expired" only if the stack's own sweeper got there first
            "held": "/problems/reservation-expired",
            "expired": "/problems/invalid-reservation-transition",
        }
        assert before_sweep.json()["type"] == problem_for[before_sweep.json()["reservation_status"]]
        assert after_sweep.status_code == 409
        assert after_sweep.json()["reservation_status"] == "expired"
        assert stock(db, product["id"]) == 10

    def test_releasing_an_expired_reservation_does_not_restock_again(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        rid = reserve(internal, [(product["id"], 4)]).json()["reservation_id"]
        make_overdue(db, rid)
        internal.post("/internal/reservations/sweep")

        response = internal.post(f"/internal/reservations/{rid}/release")

        assert (response.status_code, response.json()["status"]) == (200, "expired")
        assert stock(db, product["id"]) == 10

    def test_an_overdue_reservation_can_still_be_released(
        self, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        rid = reserve(internal, [(product["id"], 4)]).json()["reservation_id"]
        make_overdue(db, rid)

        response = internal.post(f"/internal/reservations/{rid}/release")
        internal.post("/internal/reservations/sweep")

        assert response.json()["status"] in {"released", "expired"}
        assert stock(db, product["id"]) == 10

    def test_the_lifespan_sweeper_runs_on_its_interval(
        self, shop_db: ShopDatabase, internal: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        product = make_product(stock_quantity=10)
        rid = reserve(internal, [(product["id"], 4)]).json()["reservation_id"]
        make_overdue(db, rid)
        settings = CatalogSettings(
            **shop_db.settings_kwargs("catalog"), reservation_sweep_interval_seconds=0.1
        )

        with TestClient(create_app(settings)) as fast:
            for _ in range(50):
                if stock(db, product["id"]) == 10:
                    break
                fast.get("/health/live")
                time.sleep(0.1)

        assert stock(db, product["id"]) == 10
        assert internal.get(f"/internal/reservations/{rid}").json()["status"] == "expired"


class TestServiceToken:
    @pytest.mark.parametrize("headers", [{}, {"X-Service-Token": "wrong-token-value-123"}])
    def test_internal_endpoints_need_the_service_token(
        self, anon: TestClient, headers: dict[str, str]
    ) -> None:
        rid = uuid.uuid4()
        responses = [
            anon.post(
                "/internal/reservations",
                json={"reservation_id": str(rid), "items": [{"product_id": 1, "quantity": 1}]},
                headers=headers,
            ),
            anon.get(f"/internal/reservations/{rid}", headers=headers),
            anon.post(f"/internal/reservations/{rid}/commit", headers=headers),
            anon.post(f"/internal/reservations/{rid}/release", headers=headers),
            anon.post("/internal/reservations/sweep", headers=headers),
        ]

        assert [r.status_code for r in responses] == [403] * 5
        assert responses[0].json()["type"] == "/problems/service-token-required"

    def test_a_user_token_is_not_a_service_token(self, admin: TestClient) -> None:
        assert admin.post("/internal/reservations/sweep").status_code == 403


def test_listing_pages_through_held_and_committed_reservations_only(
    internal: TestClient, make_product: ProductFactory
) -> None:
    product = make_product(stock_quantity=20)
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    ids = [uuid.uuid4() for _ in range(3)]
    for rid in ids:
        assert reserve(internal, [(product["id"], 1)], rid).status_code == 201
    assert internal.post(f"/internal/reservations/{ids[1]}/commit").status_code == 200
    assert internal.post(f"/internal/reservations/{ids[2]}/release").status_code == 200

    seen: dict[str, str] = {}
    params: dict[str, str | int] = {"limit": 1, "after_updated_at": since}
    for _ in range(1_000):
        page = internal.get("/internal/reservations", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 1
        seen |= {item["reservation_id"]: item["status"] for item in body["items"]}
        if body["next"] is None:
            break
        params = {
            "limit": 1,
            "after_updated_at": body["next"]["updated_at"],
            "after_id": body["next"]["reservation_id"],
        }
    assert seen[str(ids[0])] == "held"
    assert seen[str(ids[1])] == "committed"
    assert str(ids[2]) not in seen
    assert set(seen.values()) <= {"held", "committed"}


def test_listing_reservations_needs_the_service_token(anon: TestClient) -> None:
    assert anon.get("/internal/reservations").status_code == 403
