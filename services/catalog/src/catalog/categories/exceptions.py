"""Category and tag problems; statuses are mapped centrally by shop_common.errors."""

from __future__ import annotations

from shop_common.errors import Conflict, NotFound, Unprocessable


class CategoryNotFound(NotFound):
    title = "Category not found"


class ParentCategoryNotFound(Unprocessable):
    title = "Parent category does not exist"


class CategorySlugTaken(Conflict):
    title = "Category slug already in use"


class CategoryCycle(Conflict):
    title = "A category cannot be placed under itself or its descendants"


class CategoryTooDeep(Conflict):
    title = "Category tree too deep"


class CategoryInUse(Conflict):
    title = "Category still has products or children"


class EmptySlug(Unprocessable):
    title = "No slug can be derived from the name"
