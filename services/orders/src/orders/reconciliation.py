"""The reconciliation pass of the recovery job: finds and repairs any mismatch between orders and
catalog's reservations, whatever left it behind (a crash, a bug, an older version of the flow).

The rule it restores: a held or committed reservation belongs to exactly one order that can still
use it. For every held or committed reservation catalog lists:

- committed, and its order is failed, rejected, cancelled or absent: released (stock returns);
- held, and its order is failed, rejected, cancelled or absent: released now, not at its TTL;
- held, and its order is live (pending or later): committed (the order is sold);
- the order is `placing`, or live with a committed reservation: nothing to do here (the recovery
  of `placing` orders settles the first).

Every repair is logged and counted in `shop_orders_reconciliation_repairs_total{kind}`.

Cheap and bounded: catalog pages through its held and committed reservations by (updated_at, id)
on a partial index, a page of `page_size` per call and at most `max_pages` per run; each page
costs one indexed query here. The cursor lives in the process and wraps around at the end, so
successive runs cover everything, oldest change first. Reservations changed within the last
`grace_seconds` are left for the next round (a placement or a cancellation may be in flight)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orders.catalog_client import (
    CatalogClient,
    ReservationCursor,
    ReservationGone,
    ReservationState,
    ReservationStatus,
)
from orders.exceptions import CatalogUnavailable
from orders.models import Order, OrderStatus

log = logging.getLogger("orders.reconciliation")

REPAIRS = Counter(
    "shop_orders_reconciliation_repairs_total",
    "Mismatches between orders and catalog reservations found (and repaired) by the recovery job",
    ["kind"],
)
LIVE = frozenset(
    {OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED}
)
DEAD = frozenset({OrderStatus.FAILED, OrderStatus.REJECTED, OrderStatus.CANCELLED})


@dataclass
class Reconciler:
    """One per process (the cursor); `run` is called by the recovery thread and the internal
    trigger, never concurrently with itself (the lock is the caller's: see recovery.py)."""

    factory: sessionmaker[Session]
    catalog: CatalogClient
    page_size: int
    cursor: ReservationCursor | None = field(default=None)

    def run(self, *, grace_seconds: float, max_pages: int) -> int:
        """One bounded pass from the cursor; returns how many repairs were made. Stops early at
        the end of the list (the cursor wraps) or when catalog fails (the cursor stays)."""
        repaired = 0
        horizon = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        for _ in range(max_pages):
            page = self.catalog.list_reservations(self.cursor, self.page_size)
            settled = [r for r in page.items if r.updated_at <= horizon]
            repaired += self._repair(settled)
            if len(settled) < len(page.items) or page.next is None:
                self.cursor = None  # the rest is recent: start again from the oldest next time
                break
            self.cursor = page.next
        return repaired

    def _repair(self, reservations: list[ReservationState]) -> int:
        if not reservations:
            return 0
        ids = [r.reservation_id for r in reservations]
        with self.factory.begin() as session:
            rows = session.execute(
                select(Order.reservation_id, Order.id, Order.status).where(
                    Order.reservation_id.in_(ids)
                )
            ).all()
        orders = {row.reservation_id: (row.id, OrderStatus(row.status)) for row in rows}
        repaired = 0
        for reservation in reservations:
            order_id, status = orders.get(reservation.reservation_id, (None, None))
            kind = _mismatch(reservation.status, status)
            if kind is None:
                continue
            repaired += self._fix(kind, reservation, order_id, status)
        return repaired

    def _fix(
        self,
        kind: str,
        reservation: ReservationState,
        order_id: int | None,
        status: OrderStatus | None,
    ) -> int:
        rid: uuid.UUID = reservation.reservation_id
        try:
            if kind == "held_for_live_order":
                self.catalog.commit(rid)
            else:
                self.catalog.release(rid)
        except ReservationGone:
            kind = "live_order_without_stock"  # cannot be repaired here: an operator must look
            REPAIRS.labels(kind).inc()
            log.error(
                "reconciliation: order %s is %s but its reservation %s is gone",
                order_id,
                status,
                rid,
                extra={"repair": kind},
            )
            return 0
        except CatalogUnavailable:
            log.warning("reconciliation: catalog unavailable; reservation %s next time", rid)
            raise
        REPAIRS.labels(kind).inc()
        log.warning(
            "reconciliation: %s reservation %s of order %s (%s): %s",
            reservation.status,
            rid,
            order_id,
            status or "absent",
            ReservationStatus.COMMITTED
            if kind == "held_for_live_order"
            else "released, stock restored",
            extra={"repair": kind},
        )
        return 1


def _mismatch(
    reservation_status: ReservationStatus, order_status: OrderStatus | None
) -> str | None:
    if order_status is OrderStatus.PLACING:
        return None  # the recovery of `placing` orders settles it
    if order_status is None or order_status in DEAD:
        who = "without_order" if order_status is None else f"for_{order_status.value}_order"
        return f"{reservation_status}_{who}"
    if reservation_status is ReservationStatus.HELD and order_status in LIVE:
        return "held_for_live_order"
    return None
