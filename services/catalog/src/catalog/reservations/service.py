"""Stock reservations. Flushes, never commits; the request (or the sweeper) owns the transaction,
except create_reservation, which runs its own: one statement in autocommit for one product, a
transaction for several.

Lock order: every statement that changes stock touches products in ascending product id, one
conditional UPDATE per product, so concurrent reservations, releases and sweeps cannot deadlock.
A one-product reservation takes its product row before it inserts the reservation id, the
several-products transaction the other way round; the two meet only on one id sent with different
items at the same time (a caller's error), and PostgreSQL's deadlock detection then fails one of
them (503, where it would otherwise be a ReservationMismatch).
Every status change away from held/committed is a conditional UPDATE on the status, so stock is
restored exactly once however many releases and sweeps race."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import (
    UUID,
    Connection,
    Engine,
    Integer,
    Interval,
    Row,
    Table,
    bindparam,
    func,
    literal,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from catalog.models import Product, Reservation, ReservationItem, ReservationStatus
from catalog.reservations.exceptions import (
    InsufficientStock,
    InvalidReservationTransition,
    ReservationExpired,
    ReservationMismatch,
    ReservationNotFound,
    UnknownProducts,
)
from catalog.reservations.schemas import ReservationCreate, ReservationRead
from shop_common.db import compiled_sql, constraint_name, fetch_one_async

_NO_SYNC = {"synchronize_session": False}
# Core tables for the statements of the hot path that need no ORM unit of work.
_RESERVATIONS = cast(Table, Reservation.__table__)
_ITEMS = cast(Table, ReservationItem.__table__)
_PRODUCTS = cast(Table, Product.__table__)


def get_reservation(session: Session, reservation_id: uuid.UUID) -> Reservation:
    reservation = session.scalar(
        select(Reservation)
        .where(Reservation.id == reservation_id)
        .options(selectinload(Reservation.items))
        .execution_options(populate_existing=True)
    )
    if reservation is None:
        raise ReservationNotFound(f"no reservation {reservation_id}")
    return reservation


def list_live_reservations(
    session: Session,
    *,
    after_updated_at: datetime | None,
    after_id: uuid.UUID | None,
    limit: int,
) -> list[Reservation]:
    """Held and committed reservations in (updated_at, id) order, strictly after the cursor; keyset
    paging on ix_reservations_live_updated_at, without the lines (orders' reconciliation pass)."""
    stmt = select(Reservation).where(
        Reservation.status.in_((ReservationStatus.HELD, ReservationStatus.COMMITTED))
    )
    if after_updated_at is not None:
        after = tuple_(Reservation.updated_at, Reservation.id) > tuple_(
            literal(after_updated_at), literal(after_id or _MIN_UUID)
        )
        stmt = stmt.where(after)
    return list(session.scalars(stmt.order_by(Reservation.updated_at, Reservation.id).limit(limit)))


_MIN_UUID = uuid.UUID(int=0)


# The statements of a reservation, compiled once (shop_common.db.compiled_sql): no ORM unit of work
# or cache-key walk on the hot path.
#
# One product (nearly every order): ONE statement in autocommit, one round trip with no BEGIN and
# no COMMIT (it was four): catalog.reserve_one, a PL/pgSQL function (migration e3b5d7f9a1c2 holds
# the statement and says what it does) so that each backend plans it once. It takes the stock if
# the product is active, has enough and the id is new, and inserts the reservation and its line
# from what it took; its one row also tells from the statement's snapshot why nothing was taken.
# A concurrent request with the same id fails it on pk_reservations.
_RESERVE_ONE = (
    "SELECT * FROM catalog.reserve_one(%(reservation_id)s::uuid, %(product_id)s::integer,"
    " %(quantity)s::integer, %(status)s::varchar, %(ttl)s::interval)"
)

# Several products: one transaction, one statement, then one per product.
# 1. Insert the reservation (unless the id exists: the idempotent path) and read every wanted
#    product's stock in the same statement: one row per wanted id, `created_expires_at` NULL when
#    the id already existed, the product columns NULL for an unknown product.
_CREATED = (
    insert(_RESERVATIONS)
    .values(
        id=bindparam("reservation_id"),
        status=bindparam("status"),
        expires_at=func.now() + bindparam("ttl", type_=Interval),
    )
    .on_conflict_do_nothing(index_elements=[_RESERVATIONS.c.id])
    .returning(_RESERVATIONS.c.expires_at)
    .cte("created")
)
_WANTED = (
    func.unnest(bindparam("product_ids", type_=ARRAY(Integer)))
    .table_valued("product_id")
    .render_derived(name="wanted")
)
_CREATE_AND_CHECK = compiled_sql(
    select(
        _CREATED.c.expires_at,
        _WANTED.c.product_id,
        _PRODUCTS.c.is_active,
        _PRODUCTS.c.stock_quantity,
    ).select_from(
        _WANTED.outerjoin(_PRODUCTS, _PRODUCTS.c.id == _WANTED.c.product_id).outerjoin(
            _CREATED, true()
        )
    )
)
# 2. Per product, in ascending id (the lock order): the conditional UPDATE of the stock and the
#    INSERT of the line with the price snapshot, one statement. No row: not enough stock (now).
_TAKEN = (
    update(_PRODUCTS)
    .where(
        _PRODUCTS.c.id == bindparam("product_id"),
        _PRODUCTS.c.stock_quantity >= bindparam("quantity"),
        _PRODUCTS.c.is_active,
    )
    .values(stock_quantity=_PRODUCTS.c.stock_quantity - bindparam("quantity"))
    .returning(_PRODUCTS.c.name, _PRODUCTS.c.sku, _PRODUCTS.c.price)
    .cte("taken")
)
_TAKE_LINE = compiled_sql(
    insert(_ITEMS)
    .from_select(
        ["reservation_id", "product_id", "quantity", "unit_price", "name", "sku"],
        select(
            bindparam("reservation_id", type_=UUID()),
            bindparam("product_id", type_=Integer),
            bindparam("quantity", type_=Integer),
            _TAKEN.c.price,
            _TAKEN.c.name,
            _TAKEN.c.sku,
        ),
    )
    .returning(_ITEMS.c.name, _ITEMS.c.sku, _ITEMS.c.unit_price)
)


async def create_reservation(
    engine: Engine,
    reader: Engine,
    data: ReservationCreate,
    *,
    default_ttl_seconds: int,
    commit: bool = False,
) -> ReservationRead:
    """All or nothing. Idempotent on reservation_id: the same items answer the stored reservation
    (in whatever status it is now), other items are a ReservationMismatch. A concurrent request
    with the same id waits for the first and then takes the idempotent path.

    `commit`: reserve and commit at once (orders' placement, one call instead of two): the
    reservation is stored `committed` directly, and a stored `held` one with the same items (a
    retry of a call whose answer was lost) is committed like commit_reservation does. Either way
    the caller learns the outcome from the answer's status, as with /commit.

    Owns its transactions (the product rows are hot: each commits where it runs, holding its row
    locks no longer than its statements): one product is one statement on `reader` (AUTOCOMMIT),
    on the event loop (fetch_one_async); several products, and whatever that statement cannot
    settle alone, take one transaction on `engine` in a worker thread."""
    wanted = data.quantities()
    ttl = timedelta(seconds=data.ttl_seconds or default_ttl_seconds)
    status = ReservationStatus.COMMITTED if commit else ReservationStatus.HELD
    if len(wanted) == 1:
        reserved = await _reserve_one(reader, data, wanted, ttl=ttl, status=status)
        if reserved is not None:
            return reserved

    def in_one_transaction() -> ReservationRead:  # opened and committed in the worker thread
        with engine.begin() as connection:
            return _reserve(connection, data, wanted, ttl=ttl, status=status, commit=commit)

    return await run_in_threadpool(in_one_transaction)


async def _reserve_one(
    reader: Engine,
    data: ReservationCreate,
    wanted: dict[int, int],
    *,
    ttl: timedelta,
    status: ReservationStatus,
) -> ReservationRead | None:
    """One product in one autocommit statement (_RESERVE_ONE). Raises the 422 or 409 its snapshot
    explains. None when the id is already taken (now or by a concurrent request with the same id),
    or when the row changed between the snapshot and the UPDATE (it had the stock, the UPDATE then
    found the newer version short or inactive): the transaction path settles both, from the stored
    reservation (_existing) or from the stock as it is then."""
    [(product_id, quantity)] = wanted.items()
    params = {
        "reservation_id": str(data.reservation_id),
        "product_id": product_id,
        "quantity": quantity,
        "status": status.value,
        "ttl": ttl,
    }
    try:
        row = await fetch_one_async(reader, _RESERVE_ONE, params)
    except IntegrityError as exc:
        if constraint_name(exc) == "pk_reservations":  # the same id, inserted concurrently
            return None
        raise
    if row is None:  # the SELECT is driven by a one-row subquery
        raise RuntimeError("the reservation statement returned no row")
    id_taken, is_active, available, name, sku, unit_price, expires_at = row
    if expires_at is not None:
        item = {
            "product_id": product_id,
            "name": name,
            "sku": sku,
            "quantity": quantity,
            "unit_price": unit_price,
        }
        return ReservationRead.model_validate(
            {"id": data.reservation_id, "status": status, "expires_at": expires_at, "items": [item]}
        )
    if id_taken:
        return None
    if is_active is None:
        raise UnknownProducts(
            "some products do not exist or are not for sale", unknown=[product_id], inactive=[]
        )
    if not is_active:
        raise UnknownProducts(
            "some products do not exist or are not for sale", unknown=[], inactive=[product_id]
        )
    if available < quantity:
        raise _short(wanted, {product_id: available})
    return None


def _reserve(
    connection: Connection,
    data: ReservationCreate,
    wanted: dict[int, int],
    *,
    ttl: timedelta,
    status: ReservationStatus,
    commit: bool,
) -> ReservationRead:
    """The transaction path, in the caller's transaction on `connection`. Product rows stay locked
    from their UPDATE to the commit, so after the first statement come only the products'
    UPDATE-and-INSERT statements; the answer is built from what they return."""
    rid = str(data.reservation_id)
    rows = connection.exec_driver_sql(
        _CREATE_AND_CHECK,
        {"reservation_id": rid, "status": status.value, "ttl": ttl, "product_ids": list(wanted)},
    ).all()
    expires_at = rows[0].expires_at
    if expires_at is None:
        with Session(bind=connection) as session:  # joins the caller's transaction
            return _existing(session, data, wanted, commit=commit)
    _check_reservable(wanted, rows)
    items: list[dict[str, object]] = []
    for product_id, quantity in wanted.items():  # ascending product id: the lock order
        line = connection.exec_driver_sql(
            _TAKE_LINE, {"reservation_id": rid, "product_id": product_id, "quantity": quantity}
        ).one_or_none()
        if line is None:  # stops at the first: the transaction is rolled back anyway
            raise _short_now(connection, {p: q for p, q in wanted.items() if p >= product_id})
        items.append(
            {
                "product_id": product_id,
                "name": line.name,
                "sku": line.sku,
                "quantity": quantity,
                "unit_price": line.unit_price,
            }
        )
    return ReservationRead.model_validate(
        {"id": data.reservation_id, "status": status, "expires_at": expires_at, "items": items}
    )


def _existing(
    session: Session, data: ReservationCreate, wanted: dict[int, int], *, commit: bool
) -> ReservationRead:
    existing = get_reservation(session, data.reservation_id)
    if {i.product_id: i.quantity for i in existing.items} != wanted:
        raise ReservationMismatch(
            f"reservation {data.reservation_id} exists with other items",
            reservation_id=str(data.reservation_id),
        )
    if commit and existing.status == ReservationStatus.HELD:
        return ReservationRead.model_validate(commit_reservation(session, data.reservation_id))
    return ReservationRead.model_validate(existing)


def _short(wanted: dict[int, int], available: dict[int, int]) -> InsufficientStock:
    return InsufficientStock(
        "not enough stock for some products",
        short=[
            {"product_id": p, "requested": q, "available": available.get(p, 0)}
            for p, q in wanted.items()
            if available.get(p, 0) < q
        ],
    )


def _check_reservable(wanted: dict[int, int], rows: Sequence[Row[Any]]) -> None:
    """Refuse unknown or inactive products (422), and fail fast without waiting for any row lock
    when the current stock is already too low (409). `rows`: _CREATE_AND_CHECK's."""
    unknown = sorted(r.product_id for r in rows if r.is_active is None)
    inactive = sorted(r.product_id for r in rows if r.is_active is False)
    if unknown or inactive:
        raise UnknownProducts(
            "some products do not exist or are not for sale",
            unknown=unknown,
            inactive=inactive,
        )
    available = {r.product_id: r.stock_quantity for r in rows}
    if any(available[p] < q for p, q in wanted.items()):
        raise _short(wanted, available)


def _short_now(connection: Connection, missing: dict[int, int]) -> InsufficientStock:
    """The products whose conditional UPDATE took nothing: their stock as it is now."""
    current = connection.execute(
        select(Product.id, Product.stock_quantity, Product.is_active).where(Product.id.in_(missing))
    )
    return _short(missing, {r.id: r.stock_quantity if r.is_active else 0 for r in current})


def _restock(session: Session, reservation_ids: Sequence[uuid.UUID]) -> None:
    """Give back the stock of these reservations, product by product in ascending id."""
    totals = session.execute(
        select(ReservationItem.product_id, func.sum(ReservationItem.quantity).label("quantity"))
        .where(ReservationItem.reservation_id.in_(reservation_ids))
        .group_by(ReservationItem.product_id)
        .order_by(ReservationItem.product_id)
    ).all()
    for product_id, quantity in totals:
        session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(stock_quantity=Product.stock_quantity + quantity)
            .execution_options(**_NO_SYNC)
        )


def commit_reservation(session: Session, reservation_id: uuid.UUID) -> Reservation:
    """held → committed; committing again answers the same. A held reservation past its expiry
    cannot be committed (the sweeper returns its stock).

    The hot path is one statement: the conditional UPDATE and the read of the lines for the answer
    (a data-modifying CTE); the reservation is re-read only when the UPDATE changed nothing."""
    committed = (
        update(_RESERVATIONS)
        .where(
            _RESERVATIONS.c.id == reservation_id,
            _RESERVATIONS.c.status == ReservationStatus.HELD,
            _RESERVATIONS.c.expires_at > func.now(),
        )
        .values(status=ReservationStatus.COMMITTED, updated_at=func.now())
        .returning(_RESERVATIONS.c.id, _RESERVATIONS.c.expires_at)
        .cte("just_committed")
    )
    rows = session.execute(
        select(
            committed.c.expires_at,
            _ITEMS.c.product_id,
            _ITEMS.c.quantity,
            _ITEMS.c.unit_price,
            _ITEMS.c.name,
            _ITEMS.c.sku,
        )
        .join_from(committed, _ITEMS, _ITEMS.c.reservation_id == committed.c.id)
        .order_by(_ITEMS.c.product_id)
    ).all()
    if rows:
        # Transient (never added to the session): only what the response shows.
        return Reservation(
            id=reservation_id,
            status=ReservationStatus.COMMITTED,
            expires_at=rows[0].expires_at,
            items=[
                ReservationItem(
                    reservation_id=reservation_id,
                    product_id=row.product_id,
                    quantity=row.quantity,
                    unit_price=row.unit_price,
                    name=row.name,
                    sku=row.sku,
                )
                for row in rows
            ],
        )
    reservation = get_reservation(session, reservation_id)
    if reservation.status == ReservationStatus.HELD:
        raise ReservationExpired(
            f"reservation {reservation_id} expired at {reservation.expires_at.isoformat()}",
            reservation_status=ReservationStatus.HELD,
        )
    if reservation.status != ReservationStatus.COMMITTED:
        raise InvalidReservationTransition(
            f"reservation {reservation_id} is {reservation.status} and cannot be committed",
            reservation_status=reservation.status,
        )
    return reservation


def release_reservation(session: Session, reservation_id: uuid.UUID) -> Reservation:
    """held or committed → released, restoring the stock (a committed one is how a cancelled order
    returns stock). Releasing again, or releasing an expired reservation, changes nothing.

    Releasing an id catalog has not seen yet records it as released, without lines: its caller
    gave up on it, so a create with that id that arrives late (a slow or retried request) finds
    it and is refused as a ReservationMismatch instead of holding stock until the TTL."""
    session.execute(
        insert(_RESERVATIONS)
        .values(id=reservation_id, status=ReservationStatus.RELEASED, expires_at=func.now())
        .on_conflict_do_nothing(index_elements=[_RESERVATIONS.c.id])
    )
    released = session.scalar(
        update(Reservation)
        .where(
            Reservation.id == reservation_id,
            Reservation.status.in_((ReservationStatus.HELD, ReservationStatus.COMMITTED)),
        )
        .values(status=ReservationStatus.RELEASED, updated_at=func.now())
        .returning(Reservation.id)
        .execution_options(**_NO_SYNC)
    )
    if released is not None:
        _restock(session, [released])
    return get_reservation(session, reservation_id)


def expire_overdue(session: Session, *, limit: int) -> int:
    """Expire at most `limit` held reservations past expires_at and restock them. Rows another
    transaction holds (a release, another replica's sweeper) are skipped, not waited for."""
    candidates = list(
        session.scalars(
            select(Reservation.id)
            .where(
                Reservation.status == ReservationStatus.HELD, Reservation.expires_at <= func.now()
            )
            .order_by(Reservation.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not candidates:
        return 0
    expired = list(
        session.scalars(
            update(Reservation)
            .where(Reservation.id.in_(candidates), Reservation.status == ReservationStatus.HELD)
            .values(status=ReservationStatus.EXPIRED, updated_at=func.now())
            .returning(Reservation.id)
            .execution_options(**_NO_SYNC)
        )
    )
    _restock(session, expired)
    return len(expired)


def expire_all_overdue(session: Session, *, batch_size: int) -> int:
    """Expire every overdue held reservation in this one transaction; returns how many."""
    total = 0
    while (expired := expire_overdue(session, limit=batch_size)) > 0:
        total += expired
    return total
