"""Base input/output models and the pagination contract."""

from __future__ import annotations

import math
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def _has_nul(value: object) -> bool:
    """Walks nested lists and dicts with an explicit stack: a deeply nested value cannot exhaust
    the interpreter's recursion limit (the request guard also refuses deep JSON before this)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


class Input(BaseModel):
    """Every request body: unknown fields are refused (no mass assignment), NUL bytes are a 422."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:  # PostgreSQL text cannot store NUL
        if _has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageParams(BaseModel):
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def _page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="items per page")] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)


PageDep = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    total_pages: int
    has_next: bool
    has_previous: bool

    @classmethod
    def build(cls, items: list[T], total: int, params: PageParams) -> Page[T]:
        total_pages = math.ceil(total / params.page_size) if total else 0
        return cls(
            items=items,
            total=total,
            page=params.page,
            page_size=params.page_size,
            total_pages=total_pages,
            has_next=params.page < total_pages,
            has_previous=params.page > 1,
        )


def paginate(session: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    """Run a count and one page of `stmt` (two statements, whatever the page size).
    `stmt` must carry a deterministic ORDER BY; eager-load options on it apply to the page."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(session.scalars(stmt.limit(params.page_size).offset(params.offset)).unique())
    return rows, total
