"""Product request/response models. Validation mirrors the DB check constraints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from catalog.categories.schemas import (
    CategorySummary,
    Description,
    ForeignId,
    Name,
    Slug,
    TagName,
    TagRead,
)
from catalog.models import MAX_PRICE, MAX_STOCK, SKU_PATTERN
from shop_common.schemas import Input, Output

Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN, max_length=64)]
# Decimal never accepts NaN or Infinity; floats go through str, so 19.99 stays 19.99.
Price = Annotated[Decimal, Field(gt=0, le=MAX_PRICE, max_digits=10, decimal_places=2)]
Stock = Annotated[int, Field(ge=0, le=MAX_STOCK, strict=True)]
Tags = Annotated[list[TagName], Field(max_length=20)]

SortField = Literal[
    "id",
    "-id",
    "name",
    "-name",
    "price",
    "-price",
    "stock_quantity",
    "-stock_quantity",
    "created_at",
    "-created_at",
]


class ProductCreate(Input):
    """Also the body of PUT: a full replacement (an absent slug is derived from the name)."""

    name: Name
    sku: Sku
    price: Price
    stock_quantity: Stock
    description: Description | None = None
    slug: Slug | None = None
    category_id: ForeignId | None = None
    tags: Tags = Field(default_factory=list)
    is_active: bool = True


class ProductUpdate(Input):
    name: Name | None = None
    sku: Sku | None = None
    price: Price | None = None
    stock_quantity: Stock | None = None
    description: Description | None = None
    slug: Slug | None = None
    category_id: ForeignId | None = None
    tags: Tags | None = None
    is_active: bool | None = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> Self:
        for field in ("name", "sku", "price", "stock_quantity", "slug", "tags", "is_active"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class ProductBulkCreate(Input):
    items: Annotated[list[ProductCreate], Field(min_length=1, max_length=100)]


class ProductRead(Output):
    id: int
    name: str
    slug: str
    sku: str
    description: str | None
    price: Decimal
    stock_quantity: int
    is_active: bool
    category_id: int | None
    category: CategorySummary | None
    tags: list[TagRead]
    created_at: datetime
    updated_at: datetime


class CategoryStats(Output):
    category_id: int | None
    category_name: str | None
    product_count: int
    average_price: Decimal
    min_price: Decimal
    max_price: Decimal
    total_stock_value: Decimal


@dataclass(frozen=True)
class ProductFilters:
    category_id: int | None = None
    include_subcategories: bool = False
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    q: str | None = None
    tag: str | None = None
    is_active: bool | None = True
    in_stock: bool | None = None
    sort: SortField = "id"
