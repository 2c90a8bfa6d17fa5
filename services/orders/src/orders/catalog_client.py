"""The typed client orders uses to reserve stock in catalog (DESIGN §4 "internal reservations").

Every call carries the service token and the current X-Request-ID. Connection errors, timeouts and
5xx answers are retried with exponential backoff, with the same reservation id: every reservation
call is idempotent in catalog, so a retry after a lost answer cannot reserve twice. 4xx answers
are never retried. The worst-case duration of one call is OrdersSettings.catalog_call_bound_seconds:
(retries + 1) * (connect + read timeout) + the backoff waits (defaults: 3 * (1 + 3) + 0.3 = 12.3 s)."""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from orders.exceptions import CatalogUnavailable, InsufficientStock, UnknownProducts
from shop_common.middleware import propagation_headers

log = logging.getLogger("orders.catalog")


@dataclass(frozen=True, slots=True)
class ReservationLine:
    product_id: int
    quantity: int


class ReservedItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    product_id: int
    name: str
    sku: str
    quantity: int
    unit_price: Decimal


class ReservationStatus(enum.StrEnum):
    """Catalog's reservation statuses, as its internal API answers them (DESIGN §4)."""

    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class Reservation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    reservation_id: uuid.UUID
    status: ReservationStatus
    items: list[ReservedItem] = []
    expires_at: datetime | None = None


class ReservationCursor(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    updated_at: datetime
    reservation_id: uuid.UUID


class ReservationState(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    reservation_id: uuid.UUID
    status: ReservationStatus
    updated_at: datetime


class ReservationPage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[ReservationState]
    next: ReservationCursor | None = None


class ReservationGone(CatalogUnavailable):
    """catalog refused to commit (409): the reservation expired or was released, nothing is sold.
    A CatalogUnavailable for the placement flow (undo, 503); the recovery job gives the order up."""


class CatalogClient(Protocol):
    """What orders needs from catalog. The HTTP implementation is HttpCatalogClient; the fault
    tests inject their own."""

    def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        """Hold stock for every line, all or nothing. Raises InsufficientStock, UnknownProducts
        or CatalogUnavailable. `commit`: ask catalog to commit it in the same call; the answer's
        status says whether it did (`committed`), or the caller still has to (`held`)."""
        ...

    def commit(self, reservation_id: uuid.UUID) -> None:
        """Turn a held reservation into a sale (idempotent). Raises ReservationGone when the
        reservation expired or was released, CatalogUnavailable otherwise."""
        ...

    def release(self, reservation_id: uuid.UUID, *, retry: bool = True) -> None:
        """Give the stock back (idempotent; releasing a committed reservation restocks; an
        unknown reservation is nothing to release)."""
        ...

    def get_reservation(self, reservation_id: uuid.UUID) -> Reservation | None:
        """The reservation as catalog knows it, None when catalog never saw it."""
        ...

    def list_reservations(self, after: ReservationCursor | None, limit: int) -> ReservationPage:
        """Held and committed reservations in (updated_at, id) order after `after`, at most
        `limit` of them, without their lines (the reconciliation pass pages through them)."""
        ...


# Failures that happen before a request leaves: catalog cannot have acted on it.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"catalog answered {response.status_code}")
        self.response = response


class HttpCatalogClient:
    def __init__(
        self,
        transport: httpx.BaseTransport,
        *,
        timeout: httpx.Timeout,
        base_url: str,
        service_token: str,
        retries: int,
        backoff_seconds: float,
    ) -> None:
        # Requests go to the transport (the connection pool) directly: httpx.Client's layers
        # (auth, redirects, cookies, event hooks), none of which this client uses, cost about
        # 0.15 ms of CPU per call (issue 16). Timeouts ride on each request, as Client sets them.
        self._transport = transport
        self._timeout = timeout.as_dict()
        self._base = base_url.rstrip("/")
        self._token = service_token
        self._attempts = retries + 1
        self._backoff = backoff_seconds

    def _send(
        self, method: str, path: str, *, json: Any = None, retry: bool = True
    ) -> httpx.Response:
        headers = {"X-Service-Token": self._token, **propagation_headers()}
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts if retry else 1),
            wait=wait_exponential(multiplier=self._backoff, max=max(self._backoff * 8, 0.001)),
            retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
            reraise=True,
        )
        delivered = False  # may any attempt have reached catalog (and been acted on)?
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        response = self._exchange(method, f"{self._base}{path}", json, headers)
                    except _NEVER_SENT:
                        raise
                    except httpx.TransportError:
                        delivered = True
                        raise
                    if response.status_code >= 500:
                        delivered = True
                        raise _Retryable(response)
                    return response
        except (httpx.TransportError, _Retryable) as exc:
            log.warning("catalog %s %s failed: %s", method, path, exc)
            raise CatalogUnavailable(
                "the catalog service is unavailable; retry later", outcome_unknown=delivered
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def _exchange(
        self, method: str, url: str, json: Any, headers: dict[str, str]
    ) -> httpx.Response:
        request = httpx.Request(
            method, url, json=json, headers=headers, extensions={"timeout": self._timeout}
        )
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()  # the connection goes back to the pool
        response.request = request
        return response

    def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        body: dict[str, Any] = {
            "reservation_id": str(reservation_id),
            "items": [{"product_id": ln.product_id, "quantity": ln.quantity} for ln in lines],
        }
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        path = "/internal/reservations?commit=true" if commit else "/internal/reservations"
        response = self._send("POST", path, json=body)
        if response.status_code in (200, 201):
            return _reservation(response)
        problem = _problem(response)
        if response.status_code == 409 and "short" in problem:
            short = problem["short"] if isinstance(problem["short"], list) else []
            raise InsufficientStock("not enough stock for some of the products", short=short)
        if response.status_code in (404, 422):
            raise UnknownProducts(
                str(problem.get("detail") or "some products are unknown or inactive"),
                **_product_ids(problem),
            )
        raise _unexpected(response)

    def commit(self, reservation_id: uuid.UUID) -> None:
        response = self._send("POST", f"/internal/reservations/{reservation_id}/commit")
        if response.status_code == 409:
            raise ReservationGone("the reservation expired or was released")
        if response.status_code != 200:
            raise _unexpected(response)

    def release(self, reservation_id: uuid.UUID, *, retry: bool = True) -> None:
        response = self._send(
            "POST", f"/internal/reservations/{reservation_id}/release", retry=retry
        )
        if response.status_code not in (200, 404):
            raise _unexpected(response)

    def get_reservation(self, reservation_id: uuid.UUID) -> Reservation | None:
        response = self._send("GET", f"/internal/reservations/{reservation_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _unexpected(response)
        return _reservation(response)

    def list_reservations(self, after: ReservationCursor | None, limit: int) -> ReservationPage:
        params = f"?limit={limit}"
        if after is not None:
            params += f"&after_updated_at={quote(after.updated_at.isoformat())}"
            params += f"&after_id={after.reservation_id}"
        response = self._send("GET", f"/internal/reservations{params}")
        if response.status_code != 200:
            raise _unexpected(response)
        try:
            return ReservationPage.model_validate_json(response.content)
        except ValidationError as exc:
            log.error("catalog answered an unreadable reservation page: %s", exc)
            raise CatalogUnavailable("the catalog service gave an unexpected answer") from exc


def _reservation(response: httpx.Response) -> Reservation:
    try:
        return Reservation.model_validate_json(response.content)
    except ValidationError as exc:
        log.error("catalog answered an unreadable reservation: %s", exc)
        raise CatalogUnavailable("the catalog service gave an unexpected answer") from exc


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _product_ids(problem: dict[str, Any]) -> dict[str, Any]:
    """catalog's `unknown` and `inactive` product id lists, passed on to the client."""
    return {k: problem[k] for k in ("unknown", "inactive") if isinstance(problem.get(k), list)}


def _unexpected(response: httpx.Response) -> CatalogUnavailable:
    log.error(
        "catalog answered %s to %s %s",
        response.status_code,
        response.request.method,
        response.request.url.path,
    )
    return CatalogUnavailable("the catalog service gave an unexpected answer")
