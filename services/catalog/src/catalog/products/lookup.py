"""One product by id, sku or slug: the hot public read. One statement (product, its category and its
tags, aggregated in a subquery) run in autocommit on a fresh connection on the event loop
(shop_common.db.fetch_one_async), so a read is one round trip with no BEGIN/COMMIT, no ORM and no
thread. By sku or slug the statement is compiled once at import; by id, the hottest, it is
catalog.product_by_id, a PL/pgSQL function that each backend plans once. The answer is the same
ProductRead as the ORM path in service.py builds (tags ordered by name, like the relationship's
order_by)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Engine, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from catalog.models import Category, Product, Tag, product_tags
from catalog.products.exceptions import ProductNotFound
from catalog.products.schemas import ProductRead
from shop_common.db import compiled_sql, fetch_one_async


def _read_sql(condition: ColumnElement[bool]) -> str:
    tag = func.json_build_object(literal_column("'id'"), Tag.id, literal_column("'name'"), Tag.name)
    tags = (
        select(func.json_agg(aggregate_order_by(tag, Tag.name)))
        .select_from(product_tags.join(Tag, Tag.id == product_tags.c.tag_id))
        .where(product_tags.c.product_id == Product.id)
        .scalar_subquery()
    )
    stmt = (
        select(
            Product.id,
            Product.name,
            Product.slug,
            Product.sku,
            Product.description,
            Product.price,
            Product.stock_quantity,
            Product.is_active,
            Product.category_id,
            Product.created_at,
            Product.updated_at,
            Category.id,
            Category.name,
            Category.slug,
            tags,
        )
        .select_from(Product)
        .outerjoin(Category, Category.id == Product.category_id)
        .where(condition)
    )
    return compiled_sql(stmt)


# By id, the hottest read: the same statement as catalog.product_by_id, a PL/pgSQL function
# (migration e3b5d7f9a1c2) so that each backend plans it once instead of on every call.
_BY_ID = "SELECT * FROM catalog.product_by_id(%(key)s::integer)"
_BY_SKU = _read_sql(Product.sku == bindparam("key"))
_BY_SLUG = _read_sql(Product.slug == bindparam("key"))


def _product(row: tuple[Any, ...]) -> ProductRead:
    (
        product_id,
        name,
        slug,
        sku,
        description,
        price,
        stock_quantity,
        is_active,
        category_id,
        created_at,
        updated_at,
        joined_category_id,
        category_name,
        category_slug,
        tags,
    ) = row
    category = (
        None
        if joined_category_id is None
        else {"id": joined_category_id, "name": category_name, "slug": category_slug}
    )
    return ProductRead.model_validate(
        {
            "id": product_id,
            "name": name,
            "slug": slug,
            "sku": sku,
            "description": description,
            "price": price,
            "stock_quantity": stock_quantity,
            "is_active": is_active,
            "category_id": category_id,
            "category": category,
            "tags": tags or [],  # json_agg over no rows is NULL
            "created_at": created_at,
            "updated_at": updated_at,
        }
    )


async def read_product(reader: Engine, product_id: int) -> ProductRead:
    row = await fetch_one_async(reader, _BY_ID, {"key": product_id})
    if row is None:
        raise ProductNotFound(f"no product with id {product_id}")
    return _product(row)


async def read_product_by_sku(reader: Engine, sku: str) -> ProductRead:
    if "\x00" in sku:  # PostgreSQL text cannot hold NUL, so no product has it
        raise ProductNotFound("no product with this sku")
    row = await fetch_one_async(reader, _BY_SKU, {"key": sku})
    if row is None:
        raise ProductNotFound(f"no product with sku {sku!r}")
    return _product(row)


async def read_product_by_slug(reader: Engine, slug: str) -> ProductRead:
    if "\x00" in slug:
        raise ProductNotFound("no product with this slug")
    row = await fetch_one_async(reader, _BY_SLUG, {"key": slug})
    if row is None:
        raise ProductNotFound(f"no product with slug {slug!r}")
    return _product(row)
