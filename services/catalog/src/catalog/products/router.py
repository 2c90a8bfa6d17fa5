"""/products: reads are public, writes need an administrator."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from catalog.categories.schemas import normalize_tag
from catalog.deps import INT4_MAX, ProductId
from catalog.models import MAX_PRICE, MAX_STOCK, Product
from catalog.products import lookup as product_lookup
from catalog.products import service as product_service
from catalog.products.exceptions import InvalidTag
from catalog.products.schemas import (
    CategoryStats,
    ProductBulkCreate,
    ProductCreate,
    ProductFilters,
    ProductRead,
    ProductUpdate,
    SortField,
)
from shop_common.auth import AdminUser
from shop_common.db import ReaderDep, SessionDep
from shop_common.schemas import Page, PageDep, PageParams

router = APIRouter(prefix="/products", tags=["products"])

PriceFilter = Annotated[Decimal | None, Query(ge=0, le=MAX_PRICE)]
NoNul = r"^[^\x00]*$"


def _filters(
    category_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    include_subcategories: bool = False,
    min_price: PriceFilter = None,
    max_price: PriceFilter = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NoNul)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NoNul)] = None,
    is_active: bool = True,
    in_stock: bool | None = None,
    sort: SortField = "id",
) -> ProductFilters:
    try:
        tag_name = normalize_tag(tag) if tag is not None else None
    except ValueError as exc:
        raise InvalidTag(str(exc)) from None
    return ProductFilters(
        category_id=category_id,
        include_subcategories=include_subcategories,
        min_price=min_price,
        max_price=max_price,
        q=q,
        tag=tag_name,
        is_active=is_active,
        in_stock=in_stock,
        sort=sort,
    )


def _json(product: ProductRead) -> Response:
    """The bytes FastAPI's own response_model path would send, without its second validation of
    the model (run in another threadpool hop for a sync handler); response_model= on the route
    keeps the OpenAPI schema."""
    return Response(
        ProductRead.__pydantic_serializer__.to_json(product), media_type="application/json"
    )


def _page(rows: list[Product], total: int, page: PageParams) -> Page[ProductRead]:
    return Page[ProductRead].build([ProductRead.model_validate(p) for p in rows], total, page)


@router.post("/", status_code=201)
def create_product(body: ProductCreate, session: SessionDep, _admin: AdminUser) -> ProductRead:
    return ProductRead.model_validate(product_service.create_product(session, body))


@router.post("/bulk", status_code=201)
def bulk_create_products(
    body: ProductBulkCreate, session: SessionDep, _admin: AdminUser
) -> list[ProductRead]:
    products = product_service.bulk_create_products(session, body.items)
    return [ProductRead.model_validate(p) for p in products]


@router.get("/")
def list_products(
    session: SessionDep,
    page: PageDep,
    filters: Annotated[ProductFilters, Depends(_filters)],
) -> Page[ProductRead]:
    rows, total = product_service.list_products(session, filters, page)
    return _page(rows, total, page)


@router.get("/low-stock")
def list_low_stock_products(
    session: SessionDep,
    page: PageDep,
    threshold: Annotated[int, Query(ge=0, le=MAX_STOCK)] = 10,
    category_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
) -> Page[ProductRead]:
    rows, total = product_service.list_low_stock(session, threshold, page, category_id=category_id)
    return _page(rows, total, page)


@router.get("/stats/by-category")
def get_product_stats_by_category(session: SessionDep) -> list[CategoryStats]:
    return product_service.stats_by_category(session)


@router.get("/by-sku/{sku}", response_model=ProductRead)
async def get_product_by_sku(
    sku: Annotated[str, Path(max_length=64)], reader: ReaderDep
) -> Response:
    return _json(await product_lookup.read_product_by_sku(reader, sku))


@router.get("/by-slug/{slug}", response_model=ProductRead)
async def get_product_by_slug(
    slug: Annotated[str, Path(max_length=200)], reader: ReaderDep
) -> Response:
    return _json(await product_lookup.read_product_by_slug(reader, slug))


@router.get("/{product_id}", response_model=ProductRead)
async def get_product(product_id: ProductId, reader: ReaderDep) -> Response:
    return _json(await product_lookup.read_product(reader, product_id))


@router.put("/{product_id}")
def replace_product(
    product_id: ProductId, body: ProductCreate, session: SessionDep, _admin: AdminUser
) -> ProductRead:
    return ProductRead.model_validate(product_service.replace_product(session, product_id, body))


@router.patch("/{product_id}")
def update_product(
    product_id: ProductId, body: ProductUpdate, session: SessionDep, _admin: AdminUser
) -> ProductRead:
    return ProductRead.model_validate(product_service.update_product(session, product_id, body))


@router.delete("/{product_id}", status_code=204)
def delete_product(product_id: ProductId, session: SessionDep, _admin: AdminUser) -> Response:
    product_service.deactivate_product(session, product_id)
    return Response(status_code=204)
