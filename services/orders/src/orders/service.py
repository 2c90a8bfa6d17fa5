"""Reads and status changes of orders. Functions taking a Session flush, never commit; the
cancellation takes a sessionmaker because it calls catalog between two transactions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from orders.catalog_client import CatalogClient
from orders.exceptions import (
    ActingForOtherUser,
    CancellationPending,
    InvalidStatusTransition,
    OrderNotFound,
    OwnerCannotChangeStatus,
)
from orders.models import Order, OrderStatus
from orders.placement import CENT, load_order
from orders.schemas import OrderFilters, OrdersSummary, TopSpender
from orders.users_client import UsersClient
from shop_common.auth import Principal
from shop_common.schemas import PageParams, paginate

S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.CONFIRMED, S.CANCELLED}),
    S.CONFIRMED: frozenset({S.SHIPPED, S.CANCELLED}),
    S.SHIPPED: frozenset({S.DELIVERED}),
}
OWNER_MAY_CANCEL = frozenset({S.PENDING, S.CONFIRMED})
# Orders that never became real: listed only when asked for by status.
HIDDEN = frozenset({S.PLACING, S.REJECTED, S.FAILED})
REVENUE = frozenset({S.CONFIRMED, S.SHIPPED, S.DELIVERED})


def get_order(session: Session, principal: Principal, order_id: int) -> Order:
    order = session.scalar(
        select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    )
    if order is None or not principal.can_act_for(order.user_id):
        raise OrderNotFound(f"no order {order_id}")  # another user's order is not found either
    return order


def list_orders(
    session: Session, principal: Principal, filters: OrderFilters, page: PageParams
) -> tuple[list[Order], int]:
    if filters.user_id is not None and not principal.can_act_for(filters.user_id):
        raise ActingForOtherUser("only administrators may list other users' orders")
    user_id = filters.user_id if principal.is_superuser else principal.id
    return paginate(session, _orders_query(user_id, filters.status), page)


def list_user_orders(
    session: Session,
    principal: Principal,
    user_id: int,
    status: OrderStatus | None,
    page: PageParams,
) -> tuple[list[Order], int]:
    if not principal.can_act_for(user_id):
        raise OrderNotFound(f"no orders of user {user_id}")
    return paginate(session, _orders_query(user_id, status), page)


def _orders_query(user_id: int | None, status: OrderStatus | None) -> Select[Order]:
    stmt = select(Order).options(selectinload(Order.items)).order_by(Order.id.desc())
    if user_id is not None:
        stmt = stmt.where(Order.user_id == user_id)
    if status is None:
        return stmt.where(Order.status.not_in(HIDDEN))
    return stmt.where(Order.status == status)


def change_status(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    principal: Principal,
    order_id: int,
    new_status: OrderStatus,
) -> Order:
    """Admin: any legal move. Owner: cancel a pending or confirmed order.

    Cancelling is idempotent and crash-safe: the intent (`cancel_requested_at`) is committed
    first, then catalog releases the reservation (idempotent: stock returns once), then the order
    becomes `cancelled`. A failure after the intent leaves an order that refuses other moves;
    retrying the cancel, or the recovery job, finishes it."""
    with factory.begin() as session:
        order = session.scalar(select(Order).where(Order.id == order_id).with_for_update())
        if order is None or not principal.can_act_for(order.user_id):
            raise OrderNotFound(f"no order {order_id}")
        current = OrderStatus(order.status)
        cancelling = new_status is S.CANCELLED
        if not (cancelling and (current is S.CANCELLED or order.cancel_requested_at)):
            if order.cancel_requested_at is not None and current is not S.CANCELLED:
                raise CancellationPending(f"order {order_id} is being cancelled")
            if new_status not in TRANSITIONS.get(current, frozenset()):
                raise InvalidStatusTransition(
                    f"an order cannot go from {current} to {new_status}",
                    current_status=current.value,
                )
            if not principal.is_superuser and not (cancelling and current in OWNER_MAY_CANCEL):
                raise OwnerCannotChangeStatus("only administrators may make this change")
            if cancelling:
                order.cancel_requested_at = datetime.now(UTC)
            else:
                order.status = new_status
        if not cancelling or current is S.CANCELLED:
            return _with_items(session, order)
        reservation_id = order.reservation_id
    catalog.release(reservation_id)  # CatalogUnavailable → 503; the intent stays for a retry
    with factory.begin() as session:
        session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status != S.CANCELLED)
            .values(status=S.CANCELLED)
        )
    return load_order(factory, order_id)


def _with_items(session: Session, order: Order) -> Order:
    session.flush()  # updated_at is set by the database: read it back with the items
    return session.scalars(
        select(Order)
        .where(Order.id == order.id)
        .options(selectinload(Order.items))
        .execution_options(populate_existing=True)
    ).one()


def summary(session: Session) -> OrdersSummary:
    rows = session.execute(
        select(Order.status, func.count(), func.coalesce(func.sum(Order.total_amount), 0)).group_by(
            Order.status
        )
    ).all()
    by_status = dict.fromkeys(OrderStatus, 0)
    revenue, revenue_orders = Decimal("0.00"), 0
    for status, count, amount in rows:
        by_status[OrderStatus(status)] = count
        if status in REVENUE:
            revenue += amount
            revenue_orders += count
    average = (revenue / revenue_orders).quantize(CENT) if revenue_orders else Decimal("0.00")
    return OrdersSummary(
        total_orders=sum(n for s, n in by_status.items() if s not in HIDDEN),
        total_revenue=revenue.quantize(CENT),
        average_order_value=average,
        orders_by_status=by_status,
    )


def top_spenders(session: Session, users: UsersClient, limit: int) -> list[TopSpender]:
    spent = func.sum(Order.total_amount)
    rows = session.execute(
        select(Order.user_id, spent, func.count())
        .where(Order.status.in_(REVENUE))
        .group_by(Order.user_id)
        .order_by(spent.desc(), Order.user_id)
        .limit(limit)
    ).all()
    names = users.usernames([row[0] for row in rows])
    return [
        TopSpender(user_id=uid, username=names.get(uid), total_spent=total, order_count=count)
        for uid, total, count in rows
    ]
