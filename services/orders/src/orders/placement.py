"""Order placement across orders and catalog (DESIGN §5).

The flow commits between its steps and never holds a transaction (or a connection) across an HTTP
call, so it takes a sessionmaker, not the request session:

1. validate, look up the Idempotency-Key (unique per user);
2. insert the order as `placing` with a fresh reservation id; commit;
3. reserve in catalog (bounded retries with the same id: reservations are idempotent);
4. success: write the items with catalog's price snapshot and the total; commit; call commit in
   catalog; set `pending`; commit. 409/422 from catalog: mark `rejected`, answer 409/422. Catalog
   unavailable: release the reservation (best effort), mark `failed`, answer 503;
5. whatever a crash leaves in `placing` is finished or undone by the recovery job (recovery.py).

Every write after step 2 is conditional on the order still being `placing`, so this flow and the
recovery job can never both decide the fate of one order."""

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

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from orders.catalog_client import CatalogClient, Reservation, ReservationLine
from orders.config import OrdersSettings
from orders.exceptions import (
    ActingForOtherUser,
    CatalogUnavailable,
    IdempotencyKeyReused,
    InsufficientStock,
    OrderInProgress,
    OrderRejected,
    OrderTooLarge,
    UnknownProducts,
)
from orders.models import Order, OrderItem, OrderStatus
from orders.schemas import OrderCreate
from shop_common.auth import Principal
from shop_common.db import constraint_name

log = logging.getLogger("orders.placement")

MAX_AMOUNT = Decimal("99999999.99")  # Numeric(10, 2)
CENT = Decimal("0.01")
_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    replayed: bool


class _KeyTaken(Exception):
    """Another request of this user holds the idempotency key."""


def place_order(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    settings: OrdersSettings,
    principal: Principal,
    data: OrderCreate,
    idempotency_key: str | None,
) -> Placed:
    user_id = _owner(principal, data.user_id)
    request_hash = _request_hash(user_id, data) if idempotency_key is not None else None
    order: Order | None = None
    for _ in range(3):  # a key freed by a rejected/failed order between our two reads: try again
        if idempotency_key is not None:
            existing = _find_by_key(factory, user_id, idempotency_key)
            if existing is not None:
                return _replay(factory, settings, existing, request_hash)
        try:
            order = _insert_placing(factory, user_id, idempotency_key, request_hash)
            break
        except _KeyTaken:
            continue
    if order is None:
        raise OrderInProgress("the idempotency key is busy; retry the request")

    lines = [ReservationLine(item.product_id, item.quantity) for item in data.items]
    try:
        reservation = catalog.reserve(order.reservation_id, lines, settings.reservation_ttl_seconds)
    except (InsufficientStock, UnknownProducts):
        _close_unplaced(factory, order.id, OrderStatus.REJECTED)
        raise
    except CatalogUnavailable:
        _undo(factory, catalog, order, OrderStatus.FAILED)
        raise

    if settings.fault_pause_after_reserve_seconds:  # crash tests SIGKILL the process here
        time.sleep(settings.fault_pause_after_reserve_seconds)

    try:
        _check_matches(reservation, lines)
        total = order_total(reservation)
    except OrderTooLarge:
        _undo(factory, catalog, order, OrderStatus.REJECTED)
        raise
    except CatalogUnavailable:
        _undo(factory, catalog, order, OrderStatus.FAILED)
        raise

    if write_items(factory, order.id, reservation, total) is OrderStatus.PLACING:
        try:
            catalog.commit(order.reservation_id)
        except CatalogUnavailable:
            _undo(factory, catalog, order, OrderStatus.FAILED)
            raise
    placed = mark_pending(factory, order.id)
    if placed.status == OrderStatus.FAILED:  # the recovery job gave up on us meanwhile: undo
        _release_quietly(catalog, order.reservation_id)
        raise CatalogUnavailable("placing the order took too long; it was abandoned, retry")
    return Placed(placed, replayed=False)


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


def _insert_placing(
    factory: sessionmaker[Session], user_id: int, key: str | None, request_hash: str | None
) -> Order:
    for _ in range(5):
        order = Order(
            order_number=new_order_number(),
            status=OrderStatus.PLACING,
            user_id=user_id,
            total_amount=Decimal("0.00"),
            reservation_id=uuid.uuid4(),
            idempotency_key=key,
            request_hash=request_hash,
        )
        try:
            with factory.begin() as session:
                session.add(order)
            return order
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
    deadline = time.monotonic() + 2 * settings.catalog_call_bound_seconds + 5
    status = OrderStatus(order.status)
    while status is OrderStatus.PLACING and time.monotonic() < deadline:
        time.sleep(0.05)  # the first request is still talking to catalog
        status = _status_of(factory, order.id)
    match status:
        case OrderStatus.PLACING:
            raise OrderInProgress("the order with this Idempotency-Key is still being placed")
        case OrderStatus.REJECTED:
            raise OrderRejected("the order with this Idempotency-Key was rejected")
        case OrderStatus.FAILED:
            raise CatalogUnavailable("the order with this Idempotency-Key failed; retry")
    return Placed(load_order(factory, order.id), replayed=True)


def _status_of(factory: sessionmaker[Session], order_id: int) -> OrderStatus:
    with factory.begin() as session:
        return OrderStatus(session.scalars(select(Order.status).where(Order.id == order_id)).one())


def _check_matches(reservation: Reservation, lines: list[ReservationLine]) -> None:
    asked = {(ln.product_id, ln.quantity) for ln in lines}
    got = {(item.product_id, item.quantity) for item in reservation.items}
    if reservation.status not in ("held", "committed") or asked != got:
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


def write_items(
    factory: sessionmaker[Session], order_id: int, reservation: Reservation, total: Decimal
) -> OrderStatus:
    """Store the items and the total once, while the order is `placing` (row lock: the recovery
    job may be finishing the same order). Returns the order's status."""
    with factory.begin() as session:
        order = session.scalars(select(Order).where(Order.id == order_id).with_for_update()).one()
        if order.status != OrderStatus.PLACING:
            return OrderStatus(order.status)
        has_items = session.scalar(select(OrderItem.id).where(OrderItem.order_id == order_id))
        if has_items is None:
            session.add_all(
                OrderItem(
                    order_id=order_id,
                    product_id=item.product_id,
                    product_name=item.name,
                    sku=item.sku,
                    quantity=item.quantity,
                    unit_price=item.unit_price,
                    total_price=(item.unit_price * item.quantity).quantize(CENT),
                )
                for item in reservation.items
            )
            order.total_amount = total
        return OrderStatus.PLACING


def mark_pending(factory: sessionmaker[Session], order_id: int) -> Order:
    """`placing` → `pending` (a no-op in any other status); returns the order with its items."""
    with factory.begin() as session:
        session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == OrderStatus.PLACING)
            .values(status=OrderStatus.PENDING)
        )
        return _load(session, order_id)


def _close_unplaced(factory: sessionmaker[Session], order_id: int, status: OrderStatus) -> None:
    """rejected/failed orders give their idempotency key back: retrying with the same key makes a
    fresh attempt (errors are not replayed, like Stripe's 5xx)."""
    with factory.begin() as session:
        session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == OrderStatus.PLACING)
            .values(status=status, idempotency_key=None, request_hash=None)
        )


def _undo(
    factory: sessionmaker[Session], catalog: CatalogClient, order: Order, status: OrderStatus
) -> None:
    _release_quietly(catalog, order.reservation_id)
    _close_unplaced(factory, order.id, status)


def _release_quietly(catalog: CatalogClient, reservation_id: uuid.UUID) -> None:
    """Best effort, one attempt: the 503 must stay fast. If it fails, the reservation's TTL and
    catalog's sweeper return the stock."""
    try:
        catalog.release(reservation_id, retry=False)
    except CatalogUnavailable:
        log.warning("could not release reservation %s; catalog's TTL will", reservation_id)


def load_order(factory: sessionmaker[Session], order_id: int) -> Order:
    with factory.begin() as session:
        return _load(session, order_id)


def _load(session: Session, order_id: int) -> Order:
    return session.scalars(
        select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    ).one()
