"""Domain errors of the orders service; statuses are mapped once, in shop_common.errors."""

from __future__ import annotations

from typing import Any, ClassVar

from shop_common.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    UpstreamUnavailable,
)


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
    """A replay of a key whose order was rejected (insufficient stock, unknown products, too
    large): an Idempotency-Key's outcome is final; a new attempt needs a new key."""

    title = "Order was rejected"
    headers: ClassVar[dict[str, str]] = {"Idempotent-Replayed": "true"}


class OrderFailed(UpstreamUnavailable):
    """A replay of a key whose order failed: nothing was reserved or sold, and nothing will be.
    An Idempotency-Key's outcome is final; a new attempt needs a new key."""

    title = "Order failed"
    headers: ClassVar[dict[str, str]] = {"Idempotent-Replayed": "true"}


class OrderStateUnknown(ServiceUnavailable):
    """The database failed while reading what became of an Idempotency-Key: an order may exist.
    Not a plain 503: the client must replay the same key (or look at its orders) to learn it."""

    title = "Order state unknown"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


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
