"""Request and response models of the orders API."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, field_validator

from orders.models import OrderStatus
from shop_common.schemas import Input, Output

MAX_ORDER_LINES = 100
Int4Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


class OrderItemCreate(Input):
    product_id: Int4Id
    quantity: Annotated[int, Field(ge=1, le=1000)]


class OrderCreate(Input):
    items: list[OrderItemCreate] = Field(min_length=1, max_length=MAX_ORDER_LINES)
    user_id: Int4Id | None = Field(default=None, description="Admin only: order for this user.")

    @field_validator("items")
    @classmethod
    def _distinct_products(cls, items: list[OrderItemCreate]) -> list[OrderItemCreate]:
        counts = Counter(item.product_id for item in items)
        duplicates = sorted(product_id for product_id, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"each product may appear once; repeated: {duplicates}")
        return items


class OrderItemRead(Output):
    product_id: int
    product_name: str
    sku: str
    quantity: int
    unit_price: Decimal
    total_price: Decimal


class OrderRead(Output):
    id: int
    order_number: str
    status: OrderStatus
    user_id: int
    total_amount: Decimal
    items: list[OrderItemRead]
    created_at: datetime
    updated_at: datetime


class OrderFilters(Input):
    status: OrderStatus | None = None
    user_id: Int4Id | None = None


class OrdersSummary(Output):
    total_orders: int = Field(
        description="Orders that exist for their users: placing, rejected and failed are not counted."
    )
    total_revenue: Decimal = Field(description="Sum over confirmed, shipped and delivered orders.")
    average_order_value: Decimal = Field(description="total_revenue / the number of those orders.")
    orders_by_status: dict[OrderStatus, int]


class TopSpender(Output):
    user_id: int
    username: str | None = Field(description="None when the users service cannot be reached.")
    total_spent: Decimal
    order_count: int


class RecoveryReport(Output):
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    repaired: int = Field(default=0, description="Mismatches repaired by the reconciliation pass.")
