"""The typed client orders uses to reserve stock in catalog (DESIGN §4 "internal reservations").

Every call carries the service token and the current X-Request-ID. Connection errors, timeouts and
5xx answers are retried with exponential backoff, with the same reservation id: every reservation
call is idempotent in catalog, so a retry after a lost answer cannot reserve twice. 4xx answers
are never retried. The worst-case duration of one call is OrdersSettings.catalog_call_bound_seconds:
(retries + 1) * (connect + read timeout) + the backoff waits (defaults: 3 * (1 + 3) + 0.3 = 12.3 s).

The transport is urllib3's connection pool (bounded, keep-alive, a deadline on the wait for a free
connection), not httpx: one call cost 0.38 ms of CPU through httpx's transport and 0.19 ms through
urllib3 (bench/client_cost.py). The placement flow's own call, reserve, is AsyncCatalogReserver's:
the same contract on the event loop, so that an order takes no worker thread."""

from __future__ import annotations

import enum
import functools
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypedDict
from urllib.parse import quote

import urllib3
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from urllib3.exceptions import ConnectTimeoutError, EmptyPoolError, HTTPError

from orders.exceptions import CatalogUnavailable, InsufficientStock, UnknownProducts
from shop_common.middleware import propagation_headers
from shop_common.upstream import UpstreamError, UpstreamPool

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


class RefusedAfterDelivery(Exception):
    """catalog refused a reservation (`refusal`: InsufficientStock or UnknownProducts), but the
    answer came to a retry: an earlier attempt with the same reservation id reached catalog, and
    its statement may still be running (behind a row lock, or orphaned by a PgBouncer restart)
    and take the stock after this refusal. So the refusal alone does not settle the reservation;
    a confirmed release does (one that arrives first records the id as released, and the late
    attempt then fails on it)."""

    def __init__(self, refusal: InsufficientStock | UnknownProducts) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


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
        or CatalogUnavailable; RefusedAfterDelivery instead of the first two when the refusal
        answered a retry (an earlier attempt may still take the stock). `commit`: ask catalog to
        commit it in the same call; the answer's status says whether it did (`committed`), or
        the caller still has to (`held`)."""
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


class Reserver(Protocol):
    """The placement flow's catalog call, awaited on the event loop (AsyncCatalogReserver; a
    CatalogClient in a worker thread through ThreadedReserver)."""

    async def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        """CatalogClient.reserve's contract."""
        ...


class ThreadedReserver:
    """A CatalogClient's reserve in a worker thread: for a client given to create_app (the fault
    tests inject one), which then serves placement as it serves the rest."""

    def __init__(self, client: CatalogClient) -> None:
        self._client = client

    async def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        return await run_in_threadpool(
            functools.partial(self._client.reserve, commit=commit),
            reservation_id,
            lines,
            ttl_seconds,
        )


# Failures that happen before a request leaves: catalog cannot have acted on it. (urllib3 opens a
# connection before writing anything to it; NewConnectionError is a ConnectTimeoutError. Note that
# its ReadTimeoutError is a PoolError: only EmptyPoolError, the wait for a free slot, is here.)
_NEVER_SENT = (EmptyPoolError, ConnectTimeoutError)
# Any other failure of the exchange may have happened after catalog read the request.
_TRANSPORT_ERRORS = (HTTPError, OSError)
# The largest answer read; catalog's biggest (a page of 1,000 reservation states) is ~200 KB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """Catalog's answer, read whole. `after_delivery`: it answered a retry, and an earlier
    attempt of the same call may have reached catalog (and been acted on)."""

    status_code: int
    content: bytes
    method: str
    path: str
    after_delivery: bool = False


class _Retryable(Exception):
    """A 5xx answer: worth another attempt."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(f"catalog answered {answer.status_code}")
        self.answer = answer


class _TooLarge(HTTPError):
    """An answer over MAX_ANSWER_BYTES (read no further)."""


class CatalogCalls(TypedDict):
    """How both clients call catalog (their keyword arguments, from OrdersSettings)."""

    base_url: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    service_token: str
    retries: int
    backoff_seconds: float


def _backoff(backoff_seconds: float) -> Any:
    """The wait between attempts: doubling from backoff_seconds, at most eight times it."""
    return wait_exponential(multiplier=backoff_seconds, max=max(backoff_seconds * 8, 0.001))


class HttpCatalogClient:
    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout_seconds: float,
        read_timeout_seconds: float,
        service_token: str,
        retries: int,
        backoff_seconds: float,
        max_connections: int = 100,
    ) -> None:
        """`max_connections`: the pool's bound; a call waits at most the connect timeout for a
        free connection (then it was never sent). Close the client to close its connections."""
        self._pool = urllib3.connection_from_url(
            base_url,
            maxsize=max_connections,
            block=True,
            timeout=urllib3.Timeout(connect=connect_timeout_seconds, read=read_timeout_seconds),
            retries=False,
        )
        self._pool_timeout = connect_timeout_seconds
        self._prefix = (urllib3.util.parse_url(base_url).path or "").rstrip("/")
        self._token = service_token
        # Built once (their per-call state is thread-local in tenacity): with and without retries.
        wait = _backoff(backoff_seconds)
        retry = retry_if_exception_type((*_TRANSPORT_ERRORS, _Retryable))
        self._retrying = Retrying(
            stop=stop_after_attempt(retries + 1), wait=wait, retry=retry, reraise=True
        )
        self._once = Retrying(stop=stop_after_attempt(1), wait=wait, retry=retry, reraise=True)

    def close(self) -> None:
        self._pool.close()

    def _send(self, method: str, path: str, *, payload: Any = None, retry: bool = True) -> Answer:
        headers = {"X-Service-Token": self._token, **propagation_headers()}
        body = None
        if payload is not None:
            body = to_json(payload)
            headers["Content-Type"] = "application/json"
        delivered = False  # may any attempt have reached catalog (and been acted on)?
        try:
            for attempt in self._retrying if retry else self._once:
                with attempt:
                    try:
                        answer = self._exchange(method, f"{self._prefix}{path}", body, headers)
                    except _NEVER_SENT:
                        raise
                    except _TRANSPORT_ERRORS:
                        delivered = True
                        raise
                    if answer.status_code >= 500:
                        delivered = True
                        raise _Retryable(answer)
                    return replace(answer, after_delivery=True) if delivered else answer
        except (*_TRANSPORT_ERRORS, _Retryable) as exc:
            log.warning("catalog %s %s failed: %s", method, path, exc)
            raise CatalogUnavailable(
                "the catalog service is unavailable; retry later", outcome_unknown=delivered
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def _exchange(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        response = self._pool.urlopen(
            method,
            url,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            preload_content=False,
            pool_timeout=self._pool_timeout,  # type: ignore[arg-type]  # a queue wait: float works
        )
        try:
            content = _read_bounded(response)
        finally:
            response.release_conn()
        return Answer(response.status, content, method, url)

    def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        path, body = _reserve_request(reservation_id, lines, ttl_seconds, commit)
        return _reserved(self._send("POST", path, payload=body))

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


def _reserve_request(
    reservation_id: uuid.UUID,
    lines: Sequence[ReservationLine],
    ttl_seconds: int | None,
    commit: bool,
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "reservation_id": str(reservation_id),
        "items": [{"product_id": ln.product_id, "quantity": ln.quantity} for ln in lines],
    }
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return ("/internal/reservations?commit=true" if commit else "/internal/reservations"), body


def _reserved(response: Answer) -> Reservation:
    """What catalog's answer to a reserve call means (both clients)."""
    if response.status_code in (200, 201):
        return _reservation(response)
    problem = _problem(response)
    refusal: InsufficientStock | UnknownProducts
    if response.status_code == 409 and "short" in problem:
        short = problem["short"] if isinstance(problem["short"], list) else []
        refusal = InsufficientStock("not enough stock for some of the products", short=short)
    elif response.status_code in (404, 422):
        refusal = UnknownProducts(
            str(problem.get("detail") or "some products are unknown or inactive"),
            **_product_ids(problem),
        )
    else:
        raise _unexpected(response)
    if response.after_delivery:
        raise RefusedAfterDelivery(refusal)
    raise refusal


class AsyncCatalogReserver:
    """The placement flow's one call, `reserve`, on the event loop: no worker thread for it.

    The same contract as HttpCatalogClient.reserve (service token, request id, bounded retries
    with the same reservation id, 4xx never retried, never-sent failures told apart from ones that
    may have reached catalog, answers over MAX_ANSWER_BYTES refused). The transport is
    shop_common.upstream's pool (asyncio + httptools, keep-alive, a bound on the calls in flight,
    the wait for a free one within the connect timeout), the gateway's own client."""

    def __init__(
        self,
        *,
        base_url: str,
        connect_timeout_seconds: float,
        read_timeout_seconds: float,
        service_token: str,
        retries: int,
        backoff_seconds: float,
        max_connections: int = 100,
    ) -> None:
        self._pool = UpstreamPool(
            base_url,
            connect_timeout=connect_timeout_seconds,
            read_timeout=read_timeout_seconds,
            keepalive_seconds=4.0,  # under uvicorn's 5 s: catalog never closes one we reuse
            size=max_connections,
            acquire_timeout=connect_timeout_seconds,
        )
        self._token = service_token.encode()
        self._retries = retries
        self._wait = _backoff(backoff_seconds)
        self._retry = retry_if_exception_type((UpstreamError, _TooLarge, _Retryable))

    def close(self) -> None:
        self._pool.close()

    async def reserve(
        self,
        reservation_id: uuid.UUID,
        lines: Sequence[ReservationLine],
        ttl_seconds: int | None = None,
        *,
        commit: bool = False,
    ) -> Reservation:
        path, body = _reserve_request(reservation_id, lines, ttl_seconds, commit)
        return _reserved(await self._send("POST", path, to_json(body)))

    async def _send(self, method: str, path: str, body: bytes) -> Answer:
        headers = [  # named as the sync client names them
            (b"X-Service-Token", self._token),
            (b"Content-Type", b"application/json"),
            *((k.encode(), v.encode()) for k, v in propagation_headers().items()),
        ]
        target = path.encode()
        delivered = False  # may any attempt have reached catalog (and been acted on)?
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retries + 1),
            wait=self._wait,
            retry=self._retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        answer = await self._exchange(method, target, body, headers)
                    except UpstreamError as exc:
                        delivered = delivered or exc.sent
                        raise
                    except _TooLarge:
                        delivered = True
                        raise
                    if answer.status_code >= 500:
                        delivered = True
                        raise _Retryable(answer)
                    return replace(answer, after_delivery=True) if delivered else answer
        except (UpstreamError, _TooLarge, _Retryable) as exc:
            log.warning("catalog %s %s failed: %s", method, path, exc)
            raise CatalogUnavailable(
                "the catalog service is unavailable; retry later", outcome_unknown=delivered
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _exchange(
        self, method: str, target: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Answer:
        response = await self._pool.request(method, target, headers, body)
        try:
            declared = response.content_length
            if declared is not None and declared > MAX_ANSWER_BYTES:
                raise _TooLarge(f"catalog's answer exceeds {MAX_ANSWER_BYTES} bytes")
            content = response.body_if_complete()
            if content is None:
                parts: list[bytes] = []
                size = 0
                async for part in response.chunks():
                    size += len(part)
                    if size > MAX_ANSWER_BYTES:  # checked before the part is kept
                        raise _TooLarge(f"catalog's answer exceeds {MAX_ANSWER_BYTES} bytes")
                    parts.append(part)
                content = b"".join(parts)
        finally:
            response.release()  # an unread rest: the connection is closed, not pooled
        return Answer(response.status, content, method, target.decode())


def _read_bounded(response: urllib3.BaseHTTPResponse) -> bytes:
    """The whole answer; past MAX_ANSWER_BYTES it is refused and its connection closed."""
    declared = response.length_remaining  # Content-Length; None when chunked
    if declared is not None and declared <= MAX_ANSWER_BYTES:
        return response.data
    content = b"" if declared is not None else response.read(MAX_ANSWER_BYTES + 1)
    if declared is not None or len(content) > MAX_ANSWER_BYTES:
        response.close()  # never back into the pool with an unread rest
        raise _TooLarge(f"catalog's answer exceeds {MAX_ANSWER_BYTES} bytes")
    return content


def _reservation(response: Answer) -> Reservation:
    try:
        return Reservation.model_validate_json(response.content)
    except ValidationError as exc:
        log.error("catalog answered an unreadable reservation: %s", exc)
        # It answered 2xx: whatever it was asked may have been done.
        raise CatalogUnavailable(
            "the catalog service gave an unexpected answer", outcome_unknown=True
        ) from exc


def _problem(response: Answer) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _product_ids(problem: dict[str, Any]) -> dict[str, Any]:
    """catalog's `unknown` and `inactive` product id lists, passed on to the client."""
    return {k: problem[k] for k in ("unknown", "inactive") if isinstance(problem.get(k), list)}


def _unexpected(response: Answer) -> CatalogUnavailable:
    """An answer the call has no meaning for. What it asked was not done, unless an earlier
    attempt of the call reached catalog."""
    log.error("catalog answered %s to %s %s", response.status_code, response.method, response.path)
    return CatalogUnavailable(
        "the catalog service gave an unexpected answer", outcome_unknown=response.after_delivery
    )
