"""Category and tag request/response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from catalog.deps import INT4_MAX
from catalog.slugs import MAX_SLUG_LENGTH, check_slug
from shop_common.schemas import Input, Output

MAX_TAG_LENGTH = 50

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=5000)]
Slug = Annotated[str, StringConstraints(max_length=MAX_SLUG_LENGTH), AfterValidator(check_slug)]
ForeignId = Annotated[int, Field(ge=1, le=INT4_MAX, strict=True)]


def normalize_tag(value: str) -> str:
    """Tags compare case-insensitively and ignore repeated or surrounding white space."""
    name = " ".join(value.split()).casefold()
    if not name or len(name) > MAX_TAG_LENGTH:
        raise ValueError(f"a tag has 1..{MAX_TAG_LENGTH} characters besides white space")
    return name


TagName = Annotated[str, StringConstraints(max_length=200), AfterValidator(normalize_tag)]


class CategoryCreate(Input):
    name: Name
    slug: Slug | None = None  # derived from the name when absent
    description: Description | None = None
    parent_id: ForeignId | None = None


class CategoryUpdate(Input):
    """PATCH: only the fields sent change; the slug is kept on rename unless one is sent."""

    name: Name | None = None
    slug: Slug | None = None
    description: Description | None = None
    parent_id: ForeignId | None = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> Self:
        for field in ("name", "slug"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class CategorySummary(Output):
    id: int
    name: str
    slug: str


class CategoryRead(Output):
    id: int
    name: str
    slug: str
    description: str | None
    parent_id: int | None
    parent: CategorySummary | None
    children: list[CategorySummary]
    created_at: datetime
    updated_at: datetime


class TagRead(Output):
    id: int
    name: str
