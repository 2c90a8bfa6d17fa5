"""Reservation problems; statuses are mapped centrally by shop_common.errors."""

from __future__ import annotations

from shop_common.errors import Conflict, NotFound, Unprocessable


class ReservationNotFound(NotFound):
    title = "Reservation not found"


class InsufficientStock(Conflict):
    """Extension `short`: [{product_id, requested, available}] for every product that is short."""

    title = "Insufficient stock"


class UnknownProducts(Unprocessable):
    """Extensions `unknown` and `inactive`: the product ids that cannot be reserved."""

    title = "Unknown or inactive products"


class ReservationMismatch(Conflict):
    title = "Reservation id already used for other items"


class ReservationExpired(Conflict):
    title = "Reservation expired"


class InvalidReservationTransition(Conflict):
    title = "Reservation cannot move to that status"
