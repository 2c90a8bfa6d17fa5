"""The recovery job: finishes or undoes what a crash or an outage left half done.

- orders still `placing` past the deadline: if catalog holds or has committed their reservation,
  the order is completed (commit in catalog, then items from catalog's answer and `pending` in
  one transaction); otherwise (no reservation, released, expired, or refused by the commit with
  409) the reservation is released (idempotent) and the order marked `failed`;
- cancellations whose intent is recorded but whose order is not `cancelled` yet (the catalog call
  failed or the process died): release again (idempotent) and finish the cancellation;
- then a bounded reconciliation pass (reconciliation.py) repairs any mismatch between orders and
  reservations that is left, e.g. a `failed` order whose reservation is `committed`.

An order is marked `failed` only once its reservation is known released, expired or absent (the
release of an id catalog never saw records it as released, so a late reserve is refused).

Safe with several replicas: a batch is claimed with `FOR UPDATE SKIP LOCKED` and the claim bumps
`updated_at`, which works as a lease, so no other replica picks the same order for another
`deadline` seconds. The claim is committed before any HTTP call; each decision is then applied in
its own transaction, conditional on the order's state."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from orders.catalog_client import CatalogClient, ReservationGone, ReservationStatus
from orders.exceptions import CatalogUnavailable, OrderTooLarge
from orders.models import Order, OrderStatus
from orders.placement import complete_order, order_total
from orders.reconciliation import Reconciler
from orders.schemas import RecoveryReport
from shop_common.logs import reset_request_id, set_request_id

log = logging.getLogger("orders.recovery")


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    reservation_id: uuid.UUID
    status: OrderStatus
    is_cancelling: bool


# Reconciliation pages per background run (each `recovery_batch_size` reservations): bounded work.
RECONCILE_PAGES_PER_RUN = 5
# The internal trigger reconciles everything, up to this many pages.
RECONCILE_PAGES_FULL = 10_000


def recover_orders(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    *,
    older_than_seconds: float,
    batch_size: int,
    reconciler: Reconciler | None = None,
    reconcile_pages: int = RECONCILE_PAGES_PER_RUN,
) -> RecoveryReport:
    """Settle stuck orders, then (with a reconciler) one reconciliation pass whose grace period
    is `older_than_seconds` too. A fresh Reconciler (no cursor) reconciles from the oldest."""
    report = _settle(factory, catalog, older_than_seconds=older_than_seconds, batch_size=batch_size)
    if reconciler is not None:
        try:
            report.repaired = reconciler.run(
                grace_seconds=older_than_seconds, max_pages=reconcile_pages
            )
        except CatalogUnavailable:
            report.skipped += 1
    return report


def _settle(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    *,
    older_than_seconds: float,
    batch_size: int,
) -> RecoveryReport:
    report = RecoveryReport()
    for claimed in _claim(factory, older_than_seconds, batch_size):
        try:
            if claimed.is_cancelling:
                _finish_cancel(factory, catalog, claimed)
                report.cancelled += 1
            elif _finish_placing(factory, catalog, claimed):
                report.completed += 1
            else:
                report.failed += 1
        except CatalogUnavailable:
            report.skipped += 1  # the lease expires and the next run tries again
    return report


def _claim(
    factory: sessionmaker[Session], older_than_seconds: float, batch_size: int
) -> list[_Claimed]:
    stuck = or_(
        Order.status == OrderStatus.PLACING,
        and_(Order.cancel_requested_at.is_not(None), Order.status != OrderStatus.CANCELLED),
    )
    due = (
        select(Order.id)
        .where(stuck, Order.updated_at < func.now() - timedelta(seconds=older_than_seconds))
        .order_by(Order.updated_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with factory.begin() as session:
        rows = session.execute(
            update(Order)
            .where(Order.id.in_(due))
            .values(updated_at=func.now())
            .returning(Order.id, Order.reservation_id, Order.status, Order.cancel_requested_at)
        ).all()
    return [
        _Claimed(
            row.id, row.reservation_id, OrderStatus(row.status), row.cancel_requested_at is not None
        )
        for row in rows
    ]


def _finish_placing(
    factory: sessionmaker[Session], catalog: CatalogClient, claimed: _Claimed
) -> bool:
    """True when the order was completed, False when it was given up."""
    reservation = catalog.get_reservation(claimed.reservation_id)
    if (
        reservation is not None
        and reservation.status in (ReservationStatus.HELD, ReservationStatus.COMMITTED)
        and reservation.items
    ):
        try:
            total = order_total(reservation)
            if not _still_placing(factory, claimed.id):
                return True  # the placement flow decided it meanwhile: sell nothing more
            catalog.commit(claimed.reservation_id)
        except (OrderTooLarge, ReservationGone):  # ReservationGone: expired since we looked
            pass
        else:
            if complete_order(factory, claimed.id, reservation, total) is not None:
                log.info("recovered order %s", claimed.id)
            return True
    catalog.release(claimed.reservation_id)
    with factory.begin() as session:
        session.execute(
            update(Order)
            .where(Order.id == claimed.id, Order.status == OrderStatus.PLACING)
            .values(status=OrderStatus.FAILED)
        )
    log.info("gave up order %s: its reservation is gone", claimed.id)
    return False


def _still_placing(factory: sessionmaker[Session], order_id: int) -> bool:
    with factory.begin() as session:
        status = session.scalar(select(Order.status).where(Order.id == order_id))
    return status == OrderStatus.PLACING


def _finish_cancel(
    factory: sessionmaker[Session], catalog: CatalogClient, claimed: _Claimed
) -> None:
    catalog.release(claimed.reservation_id)
    with factory.begin() as session:
        session.execute(
            update(Order)
            .where(
                Order.id == claimed.id,
                Order.cancel_requested_at.is_not(None),
                Order.status != OrderStatus.CANCELLED,
            )
            .values(status=OrderStatus.CANCELLED)
        )
    log.info("finished the cancellation of order %s", claimed.id)


@contextmanager
def recovery_thread(
    factory: sessionmaker[Session],
    catalog: CatalogClient,
    *,
    interval_seconds: float,
    older_than_seconds: float,
    batch_size: int,
) -> Iterator[None]:
    """Runs recover_orders every interval_seconds in a daemon thread (the service is sync: the
    job's blocking database and HTTP calls stay off the event loop)."""
    stop = threading.Event()
    reconciler = Reconciler(factory, catalog, page_size=batch_size)  # its cursor: this thread's

    def loop() -> None:
        while not stop.wait(interval_seconds):
            token = set_request_id(f"recovery-{uuid.uuid4().hex[:12]}")
            try:
                report = recover_orders(
                    factory,
                    catalog,
                    older_than_seconds=older_than_seconds,
                    batch_size=batch_size,
                    reconciler=reconciler,
                )
                if any(report.model_dump().values()):
                    log.info("recovery run: %s", report.model_dump())
            except Exception:  # a broken run must not end the loop; logged with its traceback
                log.exception("recovery run failed")
            finally:
                reset_request_id(token)

    thread = threading.Thread(target=loop, name="orders-recovery", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
