"""Order placement across orders and catalog (DESIGN §5; the client contract is in
services/orders/README.md).

The flow commits between its steps and never holds a transaction (or a connection) across an HTTP
call, so it takes a sessionmaker and an AUTOCOMMIT engine, not the request session:

1. validate, look up the Idempotency-Key (unique per user; a key's outcome is final);
2. insert the order as `placing` with a fresh reservation id; committed (one statement, autocommit)
   before catalog is called;
3. reserve AND commit in catalog in one call (`POST /internal/reservations?commit=true`; bounded
   retries with the same id: idempotent, and a retry finding the reservation `held` commits it);
4. success: in one statement, write the items with catalog's price snapshot and the total and set
   `pending`; answer 201 from the objects in hand. 409/422 from catalog: nothing was taken; mark
   `rejected`, answer 409/422. When that refusal answered a retry, the first attempt (same
   reservation id) may still be running in catalog and take the stock afterwards, so it is
   settled as in 5 first: a confirmed release, or 202. A catalog that answers `held` (it
   predates `?commit`) gets the separate `/commit` call, as before.
5. Unknown is not failed. A failed catalog call (or an answer that does not match) is settled by
   one release: once catalog confirms it, nothing is or will be held or sold (a release restocks a
   committed reservation too), so the order is `failed` (503) or `rejected`. When the release is
   not confirmed either, or the final statement fails after catalog committed, the order stays
   `placing` and the answer is 202 (OutcomeUnknown): the recovery job (recovery.py) completes it
   from the (committed) reservation or releases it.

Why one call for reserve and commit is as safe as two: the guarantees of DESIGN §5 rest on the
`placing` row committed before catalog is called, on the reservation id being the order's, and on
recovery completing a `placing` order from a held or committed reservation. With two calls, a crash
after /commit already left a committed reservation for a `placing` order; one call only makes that
the normal intermediate state. A committed reservation still belongs to exactly one order (its
id is unique to the order), which either completes (this flow or recovery) or is released.

Every write after step 2 is conditional on the order still being `placing`, so this flow and the
recovery job can never both decide the fate of one order.

Steps 2 to 4 run on the event loop (fetch_one_async, AsyncCatalogReserver): the usual order takes
no worker thread. A write on the loop whose deadline passes may still commit; both are settled
here as before: a `placing` insert that failed leaves at most an order that catalog never saw
(the recovery job fails it), and a completion that failed is 202 (OutcomeUnknown)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from starlette.concurrency import run_in_threadpool

from orders.catalog_client import (
    CatalogClient,
    RefusedAfterDelivery,
    Reservation,
    ReservationLine,
    ReservationStatus,
    Reserver,
)
from orders.config import OrdersSettings
from orders.exceptions import (
    ActingForOtherUser,
    CatalogUnavailable,
    IdempotencyKeyReused,
    InsufficientStock,
    OrderFailed,
    OrderInProgress,
    OrderRejected,
    OrderStateUnknown,
    OrderTooLarge,
    UnknownProducts,
)
from orders.models import Order, OrderItem, OrderStatus
from orders.schemas import OrderCreate, OrderRead
from shop_common.auth import Principal
from shop_common.db import compiled_sql, constraint_name, fetch_one_async

log = logging.getLogger("orders.placement")

MAX_AMOUNT = Decimal("99999999.99")  # Numeric(10, 2)
CENT = Decimal("0.01")
_ALPHABET = string.ascii_uppercase + string.digits
# A replay of an order still `placing` waits this long (at most) for the first request to finish.
REPLAY_WAIT_SECONDS = 5.0
# Core tables: the hot path skips the ORM unit of work (docs/PERFORMANCE.md).
_ORDERS = cast(Table, Order.__table__)
_ITEMS = cast(Table, OrderItem.__table__)


@dataclass(frozen=True, slots=True)
class Placed:
    order: OrderRead
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Placing:
    """The `placing` row just inserted: what the rest of the flow needs of it."""

    id: int
    reservation_id: uuid.UUID
    order_number: str
    user_id: int
    created_at: datetime

    def as_order(self) -> Order:
        """The row as stored (transient, built without the database): no items, total 0."""
        return Order(
            id=self.id,
            order_number=self.order_number,
            status=OrderStatus.PLACING,
            user_id=self.user_id,
            total_amount=Decimal("0.00"),
            reservation_id=self.reservation_id,
            created_at=self.created_at,
            updated_at=self.created_at,
            items=[],
        )


class OutcomeUnknown(Exception):
    """The order may still complete: it stays `placing` and the recovery job settles it (the
    router answers 202 Accepted with this order)."""

    def __init__(self, order: Order) -> None:
        super().__init__(f"order {order.id} is still being placed")
        self.order = order


class _KeyTaken(Exception):
    """Another request of this user holds the idempotency key."""


async def place_order(
    factory: sessionmaker[Session],
    autocommit: Engine,
    catalog: CatalogClient,
    reserver: Reserver,
    settings: OrdersSettings,
    principal: Principal,
    data: OrderCreate,
    idempotency_key: str | None,
) -> Placed:
    """The flow above. Its usual path (the `placing` insert, the reservation, the completion) runs
    on the event loop: two statements with fetch_one_async and the catalog call with `reserver`,
    so an order takes no worker thread. What is rarer (an Idempotency-Key's lookup and replay, an
    undo, a catalog without `?commit`) runs the sync helpers in a worker thread."""
    user_id = _owner(principal, data.user_id)
    request_hash = _request_hash(user_id, data) if idempotency_key is not None else None
    order: _Placing | None = None
    for _ in range(3):  # a concurrent request took the key between our two reads: replay it
        if idempotency_key is not None:
            try:
                existing = await run_in_threadpool(_find_by_key, factory, user_id, idempotency_key)
                if existing is not None:
                    return await run_in_threadpool(
                        _replay, factory, settings, existing, request_hash
                    )
            except DBAPIError as exc:  # an earlier request with this key may have an order
                raise OrderStateUnknown(
                    "what became of this Idempotency-Key cannot be read now; replay it later"
                ) from exc
        try:
            order = await _insert_placing(autocommit, user_id, idempotency_key, request_hash)
            break
        except _KeyTaken:
            continue
    if order is None:
        raise OrderInProgress("the idempotency key is busy; retry the request")

    lines = [ReservationLine(item.product_id, item.quantity) for item in data.items]
    try:
        reservation = await reserver.reserve(
            order.reservation_id, lines, settings.reservation_ttl_seconds, commit=True
        )
    except (InsufficientStock, UnknownProducts):
        # catalog took nothing
        await run_in_threadpool(_close_unplaced, factory, order.id, OrderStatus.REJECTED)
        raise
    except RefusedAfterDelivery as exc:
        # Refused, but in answer to a retry: the first attempt may still take the stock. A
        # confirmed release settles it; without one the order stays `placing` (202) for recovery.
        await run_in_threadpool(_undo, factory, catalog, order, OrderStatus.REJECTED)
        raise exc.refusal from None
    except CatalogUnavailable as exc:
        await run_in_threadpool(
            _undo,
            factory,
            catalog,
            order,
            OrderStatus.FAILED,
            known_untouched=not exc.outcome_unknown,
        )
        raise

    try:
        _check_matches(reservation, lines)
        total = order_total(reservation)
    except OrderTooLarge:
        await run_in_threadpool(_undo, factory, catalog, order, OrderStatus.REJECTED)
        raise
    except CatalogUnavailable:
        await run_in_threadpool(_undo, factory, catalog, order, OrderStatus.FAILED)
        raise

    if reservation.status is not ReservationStatus.COMMITTED:  # a catalog without ?commit
        await run_in_threadpool(_commit_or_undo, factory, catalog, order)
    try:
        written, params = _completion(order.id, reservation, total)
        row = await fetch_one_async(autocommit, _COMPLETE, params)
        placed = _completed(order.id, total, written, row)
    except DBAPIError:
        # Sold in catalog; whether our transaction committed is unknown. The recovery job
        # completes the order from the committed reservation: it is not failed, it is pending.
        log.warning("order %s: the final transaction failed; recovery completes it", order.id)
        raise OutcomeUnknown(order.as_order()) from None
    if placed is None:  # the recovery job decided this order meanwhile
        return await run_in_threadpool(_decided_meanwhile, factory, order)
    return Placed(placed, replayed=False)


def _commit_or_undo(
    factory: sessionmaker[Session], catalog: CatalogClient, order: _Placing
) -> None:
    try:
        catalog.commit(order.reservation_id)  # ReservationGone (expired meanwhile) included
    except CatalogUnavailable:
        # Committed or not, a release settles it (it restocks a committed reservation too).
        _undo(factory, catalog, order, OrderStatus.FAILED)
        raise


def _decided_meanwhile(factory: sessionmaker[Session], order: _Placing) -> Placed:
    """The completion found the order no longer `placing`: answer what the recovery job made of
    it, or 202 while that cannot be read."""
    try:
        status = _status_of(factory, order.id)
        if status is OrderStatus.FAILED:  # recovery found it released: nothing sold
            raise CatalogUnavailable("placing the order took too long; it was abandoned")
        if status is not OrderStatus.PLACING:
            return Placed(OrderRead.model_validate(load_order(factory, order.id)), False)
    except DBAPIError:
        pass
    raise OutcomeUnknown(order.as_order())


def _owner(principal: Principal, user_id: int | None) -> int:
    if user_id is None or user_id == principal.id:
        return principal.id
    if not principal.is_superuser:
        raise ActingForOtherUser("only administrators may place an order for another user")
    return user_id


def _request_hash(user_id: int, data: OrderCreate) -> str:
    canonical = json.dumps(
        {"user_id": user_id, "items": [[i.product_id, i.quantity] for i in data.items]},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_order_number(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    return f"ORD-{stamp}-{''.join(secrets.choice(_ALPHABET) for _ in range(6))}"


def _find_by_key(factory: sessionmaker[Session], user_id: int, key: str) -> Order | None:
    with factory.begin() as session:
        return session.scalar(
            select(Order).where(Order.user_id == user_id, Order.idempotency_key == key)
        )


async def _insert_placing(
    autocommit: Engine, user_id: int, key: str | None, request_hash: str | None
) -> _Placing:
    for _ in range(5):
        number, reservation_id = new_order_number(), uuid.uuid4()
        try:
            row = await fetch_one_async(
                autocommit,
                _INSERT_PLACING,
                {
                    "order_number": number,
                    "status": OrderStatus.PLACING.value,
                    "user_id": user_id,
                    "reservation_id": str(reservation_id),
                    "idempotency_key": key,
                    "request_hash": request_hash,
                },
            )
            if row is None:  # INSERT ... RETURNING answers its row or raises
                raise RuntimeError("the placing insert returned no row")
            order_id, created_at = row
            return _Placing(order_id, reservation_id, number, user_id, created_at)
        except IntegrityError as exc:
            if constraint_name(exc) == "uq_orders_user_id_idempotency_key":
                raise _KeyTaken() from exc
            if constraint_name(exc) != "uq_orders_order_number":
                raise
    raise RuntimeError("could not draw a unique order number")


def _replay(
    factory: sessionmaker[Session],
    settings: OrdersSettings,
    order: Order,
    request_hash: str | None,
) -> Placed:
    if order.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different order; use a new key"
        )
    # The first request may still be talking to catalog: wait for it a while, not forever.
    deadline = time.monotonic() + min(settings.catalog_call_bound_seconds, REPLAY_WAIT_SECONDS)
    status = OrderStatus(order.status)
    while status is OrderStatus.PLACING and time.monotonic() < deadline:
        time.sleep(0.05)
        status = _status_of(factory, order.id)
    match status:
        case OrderStatus.PLACING:
            raise OutcomeUnknown(load_order(factory, order.id))
        case OrderStatus.REJECTED:
            raise OrderRejected(
                "the order with this Idempotency-Key was rejected; use a new key to try again",
                order_id=order.id,
            )
        case OrderStatus.FAILED:
            raise OrderFailed(
                "the order with this Idempotency-Key failed and nothing was charged;"
                " use a new key to try again",
                order_id=order.id,
            )
    return Placed(OrderRead.model_validate(load_order(factory, order.id)), replayed=True)


def _status_of(factory: sessionmaker[Session], order_id: int) -> OrderStatus:
    with factory.begin() as session:
        return OrderStatus(session.scalars(select(Order.status).where(Order.id == order_id)).one())


def _check_matches(reservation: Reservation, lines: list[ReservationLine]) -> None:
    asked = {(ln.product_id, ln.quantity) for ln in lines}
    got = {(item.product_id, item.quantity) for item in reservation.items}
    if (
        reservation.status not in (ReservationStatus.HELD, ReservationStatus.COMMITTED)
        or asked != got
    ):
        log.error("catalog reservation %s does not match the order", reservation.reservation_id)
        raise CatalogUnavailable("the catalog service gave an unexpected answer")


def order_total(reservation: Reservation) -> Decimal:
    """Decimal arithmetic on catalog's price snapshot; refuses what Numeric(10, 2) cannot hold."""
    total = Decimal("0.00")
    for item in reservation.items:
        line_total = (item.unit_price * item.quantity).quantize(CENT)
        if line_total > MAX_AMOUNT:
            raise OrderTooLarge(f"the line for product {item.product_id} exceeds {MAX_AMOUNT}")
        total += line_total
    if total > MAX_AMOUNT:
        raise OrderTooLarge(f"the order total exceeds {MAX_AMOUNT}")
    return total


def complete_order(
    factory: sessionmaker[Session], order_id: int, reservation: Reservation, total: Decimal
) -> OrderRead | None:
    """`placing` → `pending` with the items and the total, once catalog has committed the
    reservation (the recovery job's entry; the placement flow runs the same one statement without
    BEGIN/COMMIT). None when the order is no longer `placing` (the recovery job or the placement
    flow decided it meanwhile): then nothing is written. Returns the order as the API shows it,
    built from what is in hand, not re-read."""
    lines, params = _completion(order_id, reservation, total)
    with factory.begin() as session:
        row = session.connection().exec_driver_sql(_COMPLETE, params).one_or_none()
        return _completed(order_id, total, lines, None if row is None else tuple(row))


# The placement flow's writes, compiled once (shop_common.db.compiled_sql). Each is ONE statement,
# so the flow runs them on an AUTOCOMMIT connection: one round trip each instead of three (BEGIN,
# statement, COMMIT), and exactly as atomic (a statement is its own transaction).
_INSERT_PLACING = compiled_sql(
    insert(_ORDERS)
    .values(
        order_number=bindparam("order_number"),
        status=bindparam("status"),
        user_id=bindparam("user_id"),
        reservation_id=bindparam("reservation_id"),
        idempotency_key=bindparam("idempotency_key"),
        request_hash=bindparam("request_hash"),
    )
    .returning(_ORDERS.c.id, _ORDERS.c.created_at)
)
# `placing` → `pending` with the total, and the items, in one statement: orders.complete_placing,
# a PL/pgSQL function (migration f4c6e8a0b2d3 holds the statement) so that each backend plans it
# once. The UPDATE is conditional on `placing`, and the lines (one array per column) are inserted
# only when it matched; no row: the order was no longer `placing`, nothing was written.
_COMPLETE = (
    "SELECT * FROM orders.complete_placing(%(order_id)s::integer, %(total_amount)s::numeric,"
    " %(product_ids)s::integer[], %(product_names)s::varchar[], %(skus)s::varchar[],"
    " %(quantities)s::integer[], %(unit_prices)s::numeric[], %(total_prices)s::numeric[])"
)


def _completion(
    order_id: int, reservation: Reservation, total: Decimal
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The order's lines from the reservation, and the parameters of _COMPLETE that write them."""
    lines = [
        {
            "product_id": item.product_id,
            "product_name": item.name,
            "sku": item.sku,
            "quantity": item.quantity,
            "unit_price": item.unit_price,
            "total_price": (item.unit_price * item.quantity).quantize(CENT),
        }
        for item in reservation.items
    ]
    params = {
        "order_id": order_id,
        "total_amount": total,
        "product_ids": [line["product_id"] for line in lines],
        "product_names": [line["product_name"] for line in lines],
        "skus": [line["sku"] for line in lines],
        "quantities": [line["quantity"] for line in lines],
        "unit_prices": [line["unit_price"] for line in lines],
        "total_prices": [line["total_price"] for line in lines],
    }
    return lines, params


def _completed(
    order_id: int, total: Decimal, lines: list[dict[str, Any]], row: tuple[Any, ...] | None
) -> OrderRead | None:
    """The answer from _COMPLETE's row (None: the order was no longer `placing`, nothing written)."""
    if row is None:
        return None
    order_number, user_id, created_at, updated_at = row
    return OrderRead.model_validate(
        {
            "id": order_id,
            "order_number": order_number,
            "status": OrderStatus.PENDING,
            "user_id": user_id,
            "total_amount": total,
            "items": lines,
            "created_at": created_at,
            "updated_at": updated_at,
        }
    )


def _close_unplaced(factory: sessionmaker[Session], order_id: int, status: OrderStatus) -> None:
    """Called only once the reservation is known to hold nothing. The order keeps its
    Idempotency-Key: a key's outcome is final, so a replay answers this same failure, and a request
    with this key that is still in flight (its client gave up) can never place a second order. If the database fails here the order stays `placing` and the
    recovery job fails it (catalog has nothing for it); the client's answer is unchanged."""
    try:
        with factory.begin() as session:
            session.execute(
                update(Order)
                .where(Order.id == order_id, Order.status == OrderStatus.PLACING)
                .values(status=status)
            )
    except DBAPIError:
        log.warning("order %s: could not mark it %s; recovery will", order_id, status)


def _undo(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    order: _Placing,
    status: OrderStatus,
    *,
    known_untouched: bool = False,
) -> None:
    """Release the reservation, then close the order as `status`. When the release cannot be
    confirmed and catalog may hold (or have sold) stock for this order, the order stays `placing`
    and OutcomeUnknown is raised instead: the recovery job settles it. `known_untouched`: no
    request ever reached catalog, so there is nothing to release."""
    if not (_release_quietly(catalog, order.reservation_id) or known_untouched):
        raise OutcomeUnknown(order.as_order())
    _close_unplaced(factory, order.id, status)


def _release_quietly(catalog: CatalogClient, reservation_id: uuid.UUID) -> bool:
    """One attempt, so that the answer stays fast; True once catalog confirmed the release (which
    also records an unseen id as released, so a late reserve with it is refused)."""
    try:
        catalog.release(reservation_id, retry=False)
    except CatalogUnavailable:
        log.warning("could not release reservation %s; the recovery job will", reservation_id)
        return False
    return True


def load_order(factory: sessionmaker[Session], order_id: int) -> Order:
    with factory.begin() as session:
        return _load(session, order_id)


def _load(session: Session, order_id: int) -> Order:
    return session.scalars(
        select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    ).one()
