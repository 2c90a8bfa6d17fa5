"""Products: CRUD, search and statistics. Flushes, never commits; the request owns the transaction."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, false, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from catalog.categories import service as category_service
from catalog.models import Category, Product, Tag
from catalog.products.exceptions import (
    BulkConflict,
    BulkRejected,
    InvalidPriceRange,
    ProductNotFound,
    SkuTaken,
    SlugTaken,
    UnknownCategory,
)
from catalog.products.schemas import (
    CategoryStats,
    ProductCreate,
    ProductFilters,
    ProductUpdate,
    SortField,
)
from catalog.slugs import slugify
from shop_common.db import constraint_name
from shop_common.schemas import PageParams, paginate

_FOR_READ = (joinedload(Product.category), selectinload(Product.tags))
_WORDS = re.compile(r"[^\W_]+")
_SORT_COLUMNS: dict[str, Any] = {
    "id": Product.id,
    "name": Product.name,
    "price": Product.price,
    "stock_quantity": Product.stock_quantity,
    "created_at": Product.created_at,
}


def search_document() -> ColumnElement[Any]:
    """The same expression as the GIN index ix_products_search (first migration), so the
    planner can use the index; 'simple' keeps words as written, only lower-cased."""
    body = func.coalesce(Product.name, "") + " " + func.coalesce(Product.description, "")
    return func.to_tsvector("simple", body)


def search_condition(q: str) -> ColumnElement[bool]:
    """Every word of `q` must start a word of the name or description. Only letters and digits
    reach to_tsquery, so no input can break its syntax; a query without any matches nothing."""
    words = _WORDS.findall(q.casefold())
    if not words:
        return false()
    query = " & ".join(f"{w}:*" for w in words)
    return search_document().bool_op("@@")(func.to_tsquery("simple", query))


def _product_stmt() -> Select[Product]:
    return select(Product).options(*_FOR_READ).execution_options(populate_existing=True)


def _get_by(session: Session, condition: ColumnElement[bool], what: str) -> Product:
    product = session.scalar(_product_stmt().where(condition))
    if product is None:
        raise ProductNotFound(f"no product with {what}")
    return product


def get_product(session: Session, product_id: int) -> Product:
    return _get_by(session, Product.id == product_id, f"id {product_id}")


def _slug_for(data: ProductCreate | ProductUpdate, name: str, sku: str) -> str:
    return data.slug or slugify(name) or slugify(sku)


def _category(session: Session, category_id: int | None) -> Category | None:
    if category_id is None:
        return None
    category = category_service.find_category(session, category_id)
    if category is None:
        raise UnknownCategory(f"no category {category_id}", category_id=category_id)
    return category


def _flush(session: Session, product: Product) -> None:
    sku, slug = product.sku, product.slug  # read now: a failed flush expires the object
    try:
        session.flush()
    except IntegrityError as exc:
        name = constraint_name(exc)
        if name == "uq_products_sku":
            raise SkuTaken(f"SKU {sku} is already in use", sku=sku) from exc
        if name == "uq_products_slug":
            raise SlugTaken(f"slug {slug!r} is already in use", slug=slug) from exc
        if name == "fk_products_category_id_categories":
            raise UnknownCategory("the category no longer exists") from exc
        raise


def create_product(session: Session, data: ProductCreate) -> Product:
    product = Product(
        name=data.name,
        slug=_slug_for(data, data.name, data.sku),
        sku=data.sku,
        description=data.description,
        price=data.price,
        stock_quantity=data.stock_quantity,
        is_active=data.is_active,
        category=_category(session, data.category_id),
        tags=category_service.tags_named(session, data.tags),
    )
    session.add(product)
    _flush(session, product)
    return get_product(session, product.id)


def _item_errors(session: Session, items: list[ProductCreate]) -> list[dict[str, Any]]:
    slugs = [_slug_for(d, d.name, d.sku) for d in items]
    skus = [d.sku for d in items]
    sku_count, slug_count = Counter(skus), Counter(slugs)
    taken_skus = set(session.scalars(select(Product.sku).where(Product.sku.in_(skus))))
    taken_slugs = set(session.scalars(select(Product.slug).where(Product.slug.in_(slugs))))
    wanted = {d.category_id for d in items if d.category_id is not None}
    known = set(session.scalars(select(Category.id).where(Category.id.in_(wanted))))
    errors: list[dict[str, Any]] = []
    for index, (data, slug) in enumerate(zip(items, slugs, strict=True)):
        if data.sku in taken_skus:
            errors.append(_error(index, "sku", "sku-taken", f"SKU {data.sku} is already in use"))
        elif sku_count[data.sku] > 1:
            errors.append(_error(index, "sku", "sku-taken", "SKU repeated in this request"))
        if slug in taken_slugs:
            errors.append(_error(index, "slug", "slug-taken", f"slug {slug!r} is already in use"))
        elif slug_count[slug] > 1:
            errors.append(_error(index, "slug", "slug-taken", "slug repeated in this request"))
        if data.category_id is not None and data.category_id not in known:
            errors.append(
                _error(index, "category_id", "unknown-category", f"no category {data.category_id}")
            )
    return errors


def _error(index: int, field: str, kind: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", "items", index, field], "msg": msg, "type": kind}


def bulk_create_products(session: Session, items: list[ProductCreate]) -> list[Product]:
    """All or nothing: every item is checked first and all problems are reported together."""
    errors = _item_errors(session, items)
    if errors:
        detail = f"{len({e['loc'][2] for e in errors})} of {len(items)} items cannot be created"
        if all(e["type"] in {"sku-taken", "slug-taken"} for e in errors):
            raise BulkConflict(detail, errors=errors)
        raise BulkRejected(detail, errors=errors)
    categories = {
        c.id: c
        for c in session.scalars(
            select(Category).where(Category.id.in_({d.category_id for d in items}))
        )
    }
    tags = {
        t.name: t for t in category_service.tags_named(session, (n for d in items for n in d.tags))
    }
    products = [
        Product(
            name=d.name,
            slug=_slug_for(d, d.name, d.sku),
            sku=d.sku,
            description=d.description,
            price=d.price,
            stock_quantity=d.stock_quantity,
            is_active=d.is_active,
            category=categories.get(d.category_id) if d.category_id is not None else None,
            tags=[tags[n] for n in sorted(set(d.tags))],
        )
        for d in items
    ]
    session.add_all(products)
    try:
        session.flush()
    except IntegrityError as exc:  # lost a race with a concurrent create
        raise BulkConflict("an item collides with a product created meanwhile") from exc
    ids = [p.id for p in products]
    by_id = {p.id: p for p in session.scalars(_product_stmt().where(Product.id.in_(ids)))}
    return [by_id[i] for i in ids]


def replace_product(session: Session, product_id: int, data: ProductCreate) -> Product:
    product = get_product(session, product_id)
    product.name = data.name
    product.slug = _slug_for(data, data.name, data.sku)
    product.sku = data.sku
    product.description = data.description
    product.price = data.price
    product.stock_quantity = data.stock_quantity
    product.is_active = data.is_active
    product.category = _category(session, data.category_id)
    product.tags = category_service.tags_named(session, data.tags)
    _flush(session, product)
    return get_product(session, product_id)


def update_product(session: Session, product_id: int, data: ProductUpdate) -> Product:
    product = get_product(session, product_id)
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    if "category_id" in changes:
        product.category = _category(session, changes.pop("category_id"))
    if "tags" in changes:
        product.tags = category_service.tags_named(session, changes.pop("tags"))
    for field, value in changes.items():
        setattr(product, field, value)
    _flush(session, product)
    return get_product(session, product_id)


def deactivate_product(session: Session, product_id: int) -> None:
    """Soft delete: the row stays (orders and reservations refer to it); it can't be reserved."""
    product = get_product(session, product_id)
    product.is_active = False
    session.flush()


def list_products(
    session: Session, filters: ProductFilters, params: PageParams
) -> tuple[list[Product], int]:
    if (
        filters.min_price is not None
        and filters.max_price is not None
        and filters.min_price > filters.max_price
    ):
        raise InvalidPriceRange(
            f"min_price {filters.min_price} is greater than max_price {filters.max_price}"
        )
    stmt = select(Product).options(*_FOR_READ)
    if filters.category_id is not None:
        if filters.include_subcategories:
            ids = category_service.subtree_ids(filters.category_id)
            stmt = stmt.where(Product.category_id.in_(ids))
        else:
            stmt = stmt.where(Product.category_id == filters.category_id)
    if filters.min_price is not None:
        stmt = stmt.where(Product.price >= filters.min_price)
    if filters.max_price is not None:
        stmt = stmt.where(Product.price <= filters.max_price)
    if filters.q is not None:
        stmt = stmt.where(search_condition(filters.q))
    if filters.tag is not None:
        stmt = stmt.where(Product.tags.any(Tag.name == filters.tag))
    if filters.is_active is not None:
        stmt = stmt.where(Product.is_active == filters.is_active)
    if filters.in_stock is not None:
        stmt = stmt.where(
            Product.stock_quantity > 0 if filters.in_stock else Product.stock_quantity == 0
        )
    return paginate(session, stmt.order_by(*_order_by(filters.sort)), params)


def _order_by(sort: SortField) -> list[Any]:
    column = _SORT_COLUMNS[sort.removeprefix("-")]
    primary = column.desc() if sort.startswith("-") else column.asc()
    return [primary] if column is Product.id else [primary, Product.id.asc()]


def list_low_stock(
    session: Session, threshold: int, params: PageParams, *, category_id: int | None = None
) -> tuple[list[Product], int]:
    """Active products with at most `threshold` units, fewest first."""
    stmt = (
        select(Product)
        .options(*_FOR_READ)
        .where(Product.is_active, Product.stock_quantity <= threshold)
        .order_by(Product.stock_quantity, Product.id)
    )
    if category_id is not None:
        stmt = stmt.where(Product.category_id == category_id)
    return paginate(session, stmt, params)


def stats_by_category(session: Session) -> list[CategoryStats]:
    """Active products per category (uncategorized last, as category_id null), aggregated in SQL."""
    stmt = (
        select(
            Product.category_id,
            Category.name.label("category_name"),
            func.count(Product.id).label("product_count"),
            func.round(func.avg(Product.price), 2).label("average_price"),
            func.min(Product.price).label("min_price"),
            func.max(Product.price).label("max_price"),
            func.sum(Product.price * Product.stock_quantity).label("total_stock_value"),
        )
        .outerjoin(Category, Category.id == Product.category_id)
        .where(Product.is_active)
        .group_by(Product.category_id, Category.name)
        .order_by(Product.category_id.asc().nulls_last())
    )
    return [
        CategoryStats(
            category_id=row.category_id,
            category_name=row.category_name,
            product_count=row.product_count,
            average_price=Decimal(row.average_price),
            min_price=row.min_price,
            max_price=row.max_price,
            total_stock_value=row.total_stock_value,
        )
        for row in session.execute(stmt)
    ]
