"""Background expiry of held reservations, run in the service lifespan on an interval.

Safe with several replicas: each batch locks its rows with FOR UPDATE SKIP LOCKED, so two
sweepers never expire (and restock) the same reservation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from catalog.config import CatalogSettings
from catalog.reservations import service as reservation_service

log = logging.getLogger("catalog.sweeper")


def sweep(factory: sessionmaker[Session], *, batch_size: int) -> int:
    """Expire every overdue held reservation, one transaction per batch; returns how many."""
    total = 0
    while True:
        with factory.begin() as session:
            expired = reservation_service.expire_overdue(session, limit=batch_size)
        total += expired
        if expired < batch_size:
            return total


async def _run(app: FastAPI, settings: CatalogSettings) -> None:
    while True:
        await asyncio.sleep(settings.reservation_sweep_interval_seconds)
        try:
            expired = await run_in_threadpool(
                sweep, app.state.sessionmaker, batch_size=settings.reservation_sweep_batch_size
            )
        except Exception:  # the next round retries; a database blip must not stop the sweeper
            log.exception("reservation sweep failed")
            continue
        if expired:
            log.info("expired %d held reservations", expired)


@asynccontextmanager
async def sweeper_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: CatalogSettings = app.state.settings
    task = asyncio.create_task(_run(app, settings), name="reservation-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
