"""Domain errors of the orders service; statuses are mapped once, in shop_common.errors."""

from __future__ import annotations

from typing import Any

from shop_common.errors import Conflict, Forbidden, NotFound, Unprocessable, UpstreamUnavailable


class OrderNotFound(NotFound):
    title = "Order not found"


class InsufficientStock(Conflict):
    title = "Insufficient stock"


class UnknownProducts(Unprocessable):
    title = "Unknown or inactive products"


class CatalogUnavailable(UpstreamUnavailable):
    """`outcome_unknown`: a request may have reached catalog and been acted on (a timeout or a
    reset after sending, a 5xx); False when no attempt was ever delivered, or catalog answered."""

    title = "Catalog unavailable"

    def __init__(
        self, detail: str | None = None, *, outcome_unknown: bool = False, **extensions: Any
    ) -> None:
        super().__init__(detail, **extensions)
        self.outcome_unknown = outcome_unknown


class IdempotencyKeyReused(Unprocessable):
    title = "Idempotency key reused with another request"


class OrderInProgress(Conflict):
    title = "Order with this idempotency key is still being placed"


class OrderRejected(Conflict):
    title = "Order was rejected"


class InvalidStatusTransition(Conflict):
    title = "Invalid status transition"


class CancellationPending(Conflict):
    title = "Order is being cancelled"


class ActingForOtherUser(Forbidden):
    title = "Only administrators may act for another user"


class OwnerCannotChangeStatus(Forbidden):
    title = "Only administrators may make this status change"


class OrderTooLarge(Unprocessable):
    title = "Order total too large"
