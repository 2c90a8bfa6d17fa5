"""ORM models of the orders service; every relationship is lazy="raise".

`user_id` and `product_id` are plain columns: users and catalog own those rows."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orders.db import Base

__all__ = ["Base", "Order", "OrderItem", "OrderStatus"]


class OrderStatus(enum.StrEnum):
    PLACING = "placing"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


_STATUSES = ", ".join(f"'{s.value}'" for s in OrderStatus)
MONEY = Numeric(10, 2)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("order_number"),
        UniqueConstraint("reservation_id"),
        # NULL keys are distinct, so orders placed without a key never collide.
        UniqueConstraint("user_id", "idempotency_key"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint("total_amount >= 0", name="total_amount"),
        CheckConstraint("order_number ~ '^ORD-[0-9]{14}-[A-Z0-9]{6}$'", name="order_number"),
        CheckConstraint(
            "(idempotency_key IS NULL) = (request_hash IS NULL)", name="idempotency_hash"
        ),
        Index("ix_orders_user_id_id", "user_id", "id"),
        Index("ix_orders_status", "status"),
        # The recovery job scans these two small sets only.
        Index(
            "ix_orders_placing_updated_at",
            "updated_at",
            postgresql_where=text("status = 'placing'"),
        ),
        Index(
            "ix_orders_cancel_requested",
            "updated_at",
            postgresql_where=text("cancel_requested_at IS NOT NULL AND status <> 'cancelled'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_number: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(Integer)
    total_amount: Mapped[Decimal] = mapped_column(MONEY, server_default=text("0"))
    reservation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order", lazy="raise", order_by="OrderItem.id"
    )


class OrderItem(Base):
    __tablename__ = "order_items"
    __table_args__ = (
        UniqueConstraint("order_id", "product_id"),
        CheckConstraint("quantity BETWEEN 1 AND 1000", name="quantity"),
        CheckConstraint("unit_price > 0", name="unit_price"),
        CheckConstraint("total_price = quantity * unit_price", name="total_price"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(Integer)
    product_name: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(MONEY)
    total_price: Mapped[Decimal] = mapped_column(MONEY)

    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")
