"""Product problems; statuses are mapped centrally by shop_common.errors."""

from __future__ import annotations

from shop_common.errors import Conflict, NotFound, Unprocessable


class ProductNotFound(NotFound):
    title = "Product not found"


class SkuTaken(Conflict):
    title = "SKU already in use"


class SlugTaken(Conflict):
    title = "Product slug already in use"


class UnknownCategory(Unprocessable):
    title = "Category does not exist"


class InvalidTag(Unprocessable):
    title = "Invalid tag filter"


class InvalidPriceRange(Unprocessable):
    title = "min_price is greater than max_price"


class BulkConflict(Conflict):
    """Every rejected item of a bulk create collides with existing data; nothing was stored."""

    title = "Bulk create rejected"


class BulkRejected(Unprocessable):
    """At least one item of a bulk create cannot be stored; nothing was stored."""

    title = "Bulk create rejected"
