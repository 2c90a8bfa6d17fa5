"""ORM models of the catalog service; every relationship is lazy="raise"."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from catalog.db import Base, metadata

# Shared by the schema validation (products/schemas.py) and the DB check constraint.
SKU_PATTERN = "^[A-Z0-9][A-Z0-9-]{0,63}$"
MAX_PRICE = Decimal("99999999.99")
MAX_STOCK = 1_000_000


class ReservationStatus(enum.StrEnum):
    """held → committed | released | expired; committed → released (a cancelled order restocks).
    The DB check constraint `status_known` allows exactly these values."""

    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


# The full-text document of a product. The GIN index in the first migration is built on exactly
# this expression, and products/service.py filters with it, so the planner can use the index.
SEARCH_DOCUMENT_SQL = (
    "to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(description, ''))"
)
EXPRESSION_INDEXES = frozenset({"ix_products_search"})


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    parent: Mapped[Category | None] = relationship(
        remote_side=[id], back_populates="children", lazy="raise"
    )
    children: Mapped[list[Category]] = relationship(
        back_populates="parent", lazy="raise", order_by="Category.id"
    )

    __table_args__ = (CheckConstraint("parent_id <> id", name="not_own_parent"),)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declared shape


product_tags = Table(
    "product_tags",
    metadata,
    Column("product_id", ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    created_at: Mapped[datetime] = _created_at()

    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock_quantity: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"), index=True)
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    category: Mapped[Category | None] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(
        secondary=product_tags, lazy="raise", order_by="Tag.name"
    )

    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint(f"price <= {MAX_PRICE}", name="price_max"),
        CheckConstraint(
            f"stock_quantity >= 0 AND stock_quantity <= {MAX_STOCK}", name="stock_range"
        ),
        CheckConstraint(f"sku ~ '{SKU_PATTERN}'", name="sku_format"),
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        Index("ix_products_price", "price"),
        Index("ix_products_search", text(SEARCH_DOCUMENT_SQL), postgresql_using="gin"),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012


class Reservation(Base):
    """A client-chosen id (orders' reservation_id) makes creation idempotent."""

    __tablename__ = "reservations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'held'"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    items: Mapped[list[ReservationItem]] = relationship(
        back_populates="reservation", lazy="raise", order_by="ReservationItem.product_id"
    )

    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in ReservationStatus) + ")",
            name="status_known",
        ),
        # The sweeper's scan: held reservations by expiry.
        Index(
            "ix_reservations_held_expires_at",
            "expires_at",
            postgresql_where=text("status = 'held'"),
        ),
        # orders' reconciliation pass pages through held and committed reservations by
        # (updated_at, id).
        Index(
            "ix_reservations_live_updated_at",
            "updated_at",
            "id",
            postgresql_where=text("status IN ('held', 'committed')"),
        ),
    )
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012


class ReservationItem(Base):
    """Name, sku and unit price are snapshots taken when the stock was reserved."""

    __tablename__ = "reservation_items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reservation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reservations.id", ondelete="CASCADE")
    )
    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="RESTRICT"), index=True
    )
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    name: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str] = mapped_column(String(64))

    reservation: Mapped[Reservation] = relationship(back_populates="items", lazy="raise")

    __table_args__ = (
        UniqueConstraint("reservation_id", "product_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )


__all__ = [
    "Base",
    "Category",
    "Product",
    "Reservation",
    "ReservationItem",
    "Tag",
    "product_tags",
]
