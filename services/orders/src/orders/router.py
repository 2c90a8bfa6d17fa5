"""/orders handlers (thin: parse, call one service function, shape the output) and the internal
recovery trigger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from orders import placement, recovery
from orders import service as order_service
from orders.deps import CatalogDep, ReserverDep, SettingsDep, UsersDep
from orders.models import OrderStatus
from orders.reconciliation import Reconciler
from orders.schemas import (
    OrderCreate,
    OrderFilters,
    OrderRead,
    OrdersSummary,
    RecoveryReport,
    TopSpender,
)
from shop_common.auth import AdminUser, CurrentUser, InternalCaller
from shop_common.db import ReaderDep, SessionDep, TransactionFactoryDep
from shop_common.schemas import Page, PageDep

router = APIRouter(prefix="/orders", tags=["orders"])
internal_router = APIRouter(prefix="/internal/orders", tags=["internal"], include_in_schema=False)

# When a client answered 202 should look again: the first request may finish within seconds; the
# recovery job settles the rest after placing_deadline_seconds.
RETRY_AFTER_SECONDS = 5
OrderId = Annotated[int, Path(ge=1, le=2**31 - 1)]
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Same key and body again answer the same order (Idempotent-Replayed: true).",
    ),
]
StatusFilter = Annotated[
    OrderStatus | None, Query(description="placing/rejected/failed are listed only when asked for")
]
UserFilter = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


@router.post(
    "/",
    status_code=201,
    response_model=OrderRead,
    responses={
        201: {
            "description": "The order (also for a replayed Idempotency-Key).",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when this answers an earlier request with the same key",
                    "schema": {"type": "string"},
                }
            },
        },
        202: {
            "model": OrderRead,
            "description": (
                "The outcome is not known yet (a fault hit the placement): the order is `placing`"
                " and will end `pending` or `failed` by itself. Poll `Location` (GET /orders/{id})"
                " or replay with the same Idempotency-Key after `Retry-After` seconds."
            ),
            "headers": {
                "Location": {"description": "/orders/{id}", "schema": {"type": "string"}},
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}},
            },
        },
        409: {"description": "Insufficient stock (`short` lists the products)."},
        422: {"description": "Invalid items, unknown/inactive products, reused key."},
        503: {
            "description": (
                "Catalog or database unavailable: this request placed no order and holds no"
                " stock; retrying (with the same key) is safe."
            )
        },
    },
)
async def create_order(
    body: OrderCreate,
    user: CurrentUser,
    factory: TransactionFactoryDep,
    autocommit: ReaderDep,  # placement's one-statement writes: see placement.py
    catalog: CatalogDep,
    reserver: ReserverDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    try:
        placed = await placement.place_order(
            factory, autocommit, catalog, reserver, settings, user, body, idempotency_key
        )
    except placement.OutcomeUnknown as unknown:
        headers = {
            "Location": f"/orders/{unknown.order.id}",
            "Retry-After": str(RETRY_AFTER_SECONDS),
        }
        return _order_json(OrderRead.model_validate(unknown.order), 202, headers)
    headers = {"Idempotent-Replayed": "true"} if placed.replayed else {}
    return _order_json(placed.order, 201, headers)


_ORDER_JSON = OrderRead.__pydantic_serializer__


def _order_json(order: OrderRead, status: int, headers: dict[str, str]) -> Response:
    """Serialized once (response_model= keeps the OpenAPI and the JSON the same)."""
    return Response(
        _ORDER_JSON.to_json(order), status, headers=headers, media_type="application/json"
    )


@router.get("/")
def list_orders(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    status: StatusFilter = None,
    user_id: UserFilter = None,
) -> Page[OrderRead]:
    filters = OrderFilters(status=status, user_id=user_id)
    rows, total = order_service.list_orders(session, user, filters, page)
    return Page[OrderRead].build([OrderRead.model_validate(o) for o in rows], total, page)


@router.get("/stats/summary")
def get_orders_summary(session: SessionDep, _admin: AdminUser) -> OrdersSummary:
    return order_service.summary(session)


@router.get("/stats/top-spenders")
def get_top_spenders(
    session: SessionDep,
    users: UsersDep,
    _admin: AdminUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[TopSpender]:
    return order_service.top_spenders(session, users, limit)


@router.get("/user/{user_id}")
def list_user_orders(
    user_id: UserId,
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    status: StatusFilter = None,
) -> Page[OrderRead]:
    rows, total = order_service.list_user_orders(session, user, user_id, status, page)
    return Page[OrderRead].build([OrderRead.model_validate(o) for o in rows], total, page)


@router.get("/{order_id}")
def get_order(order_id: OrderId, session: SessionDep, user: CurrentUser) -> OrderRead:
    return OrderRead.model_validate(order_service.get_order(session, user, order_id))


@router.patch("/{order_id}/status")
def change_order_status(
    order_id: OrderId,
    new_status: Annotated[OrderStatus, Query()],
    user: CurrentUser,
    factory: TransactionFactoryDep,
    catalog: CatalogDep,
) -> OrderRead:
    order = order_service.change_status(factory, catalog, user, order_id, new_status)
    return OrderRead.model_validate(order)


@internal_router.post("/recover", dependencies=[InternalCaller])
def recover_orders(
    factory: TransactionFactoryDep,
    catalog: CatalogDep,
    settings: SettingsDep,
    older_than_seconds: Annotated[float | None, Query(ge=0, le=86_400)] = None,
) -> RecoveryReport:
    """Run the recovery job once, now, with a full reconciliation pass (tests; operators).
    Default age (and reconciliation grace): placing_deadline_seconds."""
    return recovery.recover_orders(
        factory,
        catalog,
        older_than_seconds=(
            settings.placing_deadline_seconds if older_than_seconds is None else older_than_seconds
        ),
        batch_size=settings.recovery_batch_size,
        reconciler=Reconciler(factory, catalog, page_size=settings.recovery_batch_size),
        reconcile_pages=recovery.RECONCILE_PAGES_FULL,
    )
