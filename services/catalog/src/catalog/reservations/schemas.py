"""Internal reservation API models (DESIGN §4)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field

from catalog.categories.schemas import ForeignId
from catalog.models import MAX_STOCK, ReservationStatus
from shop_common.schemas import Input, Output


class ReservationLine(Input):
    product_id: ForeignId
    quantity: Annotated[int, Field(ge=1, le=MAX_STOCK, strict=True)]


class ReservationCreate(Input):
    reservation_id: uuid.UUID
    items: Annotated[list[ReservationLine], Field(min_length=1, max_length=100)]
    ttl_seconds: Annotated[int, Field(ge=1, le=3600, strict=True)] | None = None

    def quantities(self) -> dict[int, int]:
        """Lines merged by product (a product listed twice is reserved once, summed), by id."""
        merged: dict[int, int] = {}
        for line in self.items:
            merged[line.product_id] = merged.get(line.product_id, 0) + line.quantity
        return dict(sorted(merged.items()))


class ReservationItemRead(Output):
    product_id: int
    name: str
    sku: str
    quantity: int
    unit_price: Decimal


class ReservationRead(Output):
    reservation_id: uuid.UUID = Field(validation_alias="id")
    status: ReservationStatus
    expires_at: datetime
    items: list[ReservationItemRead]


class SweepResult(Output):
    expired: int


class ReservationStateRead(Output):
    reservation_id: uuid.UUID = Field(validation_alias="id")
    status: ReservationStatus
    updated_at: datetime


class ReservationCursor(Output):
    updated_at: datetime
    reservation_id: uuid.UUID


class ReservationStatePage(Output):
    """`next`: pass it back as after_updated_at/after_id for the following page; None at the end."""

    items: list[ReservationStateRead]
    next: ReservationCursor | None
