"""/internal/reservations: used by orders with the service token; never routed by the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime

from catalog.config import CatalogSettings
from catalog.reservations import service as reservation_service
from catalog.reservations.schemas import (
    ReservationCreate,
    ReservationCursor,
    ReservationRead,
    ReservationStatePage,
    ReservationStateRead,
    SweepResult,
)
from shop_common.auth import InternalCaller
from shop_common.db import EngineDep, ReaderDep, SessionDep, TransactionFactoryDep

router = APIRouter(
    prefix="/internal/reservations", tags=["internal"], dependencies=[InternalCaller]
)


_READ_JSON = ReservationRead.__pydantic_serializer__


def _settings(request: Request) -> CatalogSettings:
    settings: CatalogSettings = request.app.state.settings
    return settings


@router.post("", status_code=201, response_model=ReservationRead)
async def create_reservation(
    body: ReservationCreate,
    engine: EngineDep,
    reader: ReaderDep,
    request: Request,
    commit: Annotated[
        bool,
        Query(
            description=(
                "Reserve and commit in one transaction (status `committed`); a stored `held`"
                " reservation with the same items is committed. Orders' placement uses it."
            )
        ),
    ] = False,
) -> Response:
    ttl = _settings(request).reservation_ttl_seconds
    # The service owns its commits (hot rows: the reason TransactionFactoryDep exists, see
    # shop_common.db), with no ORM Session on this hot path: one product is one statement on the
    # AUTOCOMMIT reader, on the event loop; several products a Core transaction on the engine, in
    # a worker thread.
    reservation = await reservation_service.create_reservation(
        engine, reader, body, default_ttl_seconds=ttl, commit=commit
    )
    # Serialized once, here (response_model keeps the OpenAPI): the commit has happened.
    return Response(
        content=_READ_JSON.to_json(reservation), status_code=201, media_type="application/json"
    )


@router.get("")
def list_reservations(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    after_updated_at: AwareDatetime | None = None,
    after_id: uuid.UUID | None = None,
) -> ReservationStatePage:
    """Held and committed reservations, oldest change first, one keyset page at a time."""
    rows = reservation_service.list_live_reservations(
        session, after_updated_at=after_updated_at, after_id=after_id, limit=limit
    )
    items = [ReservationStateRead.model_validate(r) for r in rows]
    last = rows[-1] if len(rows) == limit else None
    cursor = (
        None
        if last is None
        else ReservationCursor(updated_at=last.updated_at, reservation_id=last.id)
    )
    return ReservationStatePage(items=items, next=cursor)


@router.post("/sweep")
def sweep_reservations(factory: TransactionFactoryDep, request: Request) -> SweepResult:
    batch = _settings(request).reservation_sweep_batch_size
    with factory.begin() as session:
        return SweepResult(
            expired=reservation_service.expire_all_overdue(session, batch_size=batch)
        )


@router.get("/{reservation_id}")
def get_reservation(reservation_id: uuid.UUID, session: SessionDep) -> ReservationRead:
    return ReservationRead.model_validate(
        reservation_service.get_reservation(session, reservation_id)
    )


@router.post("/{reservation_id}/commit")
def commit_reservation(
    reservation_id: uuid.UUID, factory: TransactionFactoryDep
) -> ReservationRead:
    with factory.begin() as session:
        return ReservationRead.model_validate(
            reservation_service.commit_reservation(session, reservation_id)
        )


@router.post("/{reservation_id}/release")
def release_reservation(
    reservation_id: uuid.UUID, factory: TransactionFactoryDep
) -> ReservationRead:
    with factory.begin() as session:
        return ReservationRead.model_validate(
            reservation_service.release_reservation(session, reservation_id)
        )
