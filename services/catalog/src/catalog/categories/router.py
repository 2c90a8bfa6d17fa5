"""/categories and /tags: reads are public, writes need an administrator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from catalog.categories import service as category_service
from catalog.categories.schemas import CategoryCreate, CategoryRead, CategoryUpdate, TagRead
from catalog.deps import INT4_MAX, CategoryId
from shop_common.auth import AdminUser
from shop_common.db import SessionDep
from shop_common.schemas import Page, PageDep

router = APIRouter(prefix="/categories", tags=["categories"])
tags_router = APIRouter(prefix="/tags", tags=["tags"])


@router.post("/", status_code=201)
def create_category(body: CategoryCreate, session: SessionDep, _admin: AdminUser) -> CategoryRead:
    return CategoryRead.model_validate(category_service.create_category(session, body))


@router.get("/")
def list_categories(
    session: SessionDep,
    page: PageDep,
    parent_id: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
    roots_only: bool = False,
) -> Page[CategoryRead]:
    rows, total = category_service.list_categories(
        session, page, parent_id=parent_id, roots_only=roots_only
    )
    return Page[CategoryRead].build([CategoryRead.model_validate(c) for c in rows], total, page)


@router.get("/{category_id}")
def get_category(category_id: CategoryId, session: SessionDep) -> CategoryRead:
    return CategoryRead.model_validate(category_service.get_category(session, category_id))


@router.patch("/{category_id}")
def update_category(
    category_id: CategoryId, body: CategoryUpdate, session: SessionDep, _admin: AdminUser
) -> CategoryRead:
    return CategoryRead.model_validate(category_service.update_category(session, category_id, body))


@router.delete("/{category_id}", status_code=204)
def delete_category(category_id: CategoryId, session: SessionDep, _admin: AdminUser) -> Response:
    category_service.delete_category(session, category_id)
    return Response(status_code=204)


@tags_router.get("/")
def list_tags(
    session: SessionDep,
    page: PageDep,
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
) -> Page[TagRead]:
    """Tags by name; `q` keeps the tags whose (normalised) name starts with it."""
    prefix = " ".join(q.split()).casefold() if q else None
    rows, total = category_service.list_tags(session, page, prefix=prefix)
    return Page[TagRead].build([TagRead.model_validate(t) for t in rows], total, page)
