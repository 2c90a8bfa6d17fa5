"""Application factory: `python -m shop_common.server orders.main:create_app` (uvicorn with
`WEB_CONCURRENCY` workers, as the launcher and the image run it; `uvicorn --factory
orders.main:create_app` runs one process). Nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from orders.catalog_client import (
    AsyncCatalogReserver,
    CatalogCalls,
    CatalogClient,
    HttpCatalogClient,
    ThreadedReserver,
)
from orders.config import OrdersSettings
from orders.db import SCHEMA
from orders.recovery import recovery_thread
from orders.router import internal_router, router
from orders.users_client import UsersClient
from shop_common.app import ServiceSpec, build_service_app

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(
    settings: OrdersSettings | None = None, *, catalog: CatalogClient | None = None
) -> FastAPI:
    """`catalog` replaces the HTTP catalog client (the fault tests inject a faulty one)."""
    settings = settings or OrdersSettings()  # read from the environment
    resolved = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        token = resolved.internal_api_token.get_secret_value()
        users_timeout = httpx.Timeout(resolved.users_timeout_seconds)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        to_catalog = CatalogCalls(
            base_url=resolved.catalog_url,
            connect_timeout_seconds=resolved.catalog_connect_timeout_seconds,
            read_timeout_seconds=resolved.catalog_read_timeout_seconds,
            service_token=token,
            retries=resolved.catalog_retries,
            backoff_seconds=resolved.catalog_backoff_seconds,
        )
        http_catalog = HttpCatalogClient(**to_catalog)
        reserver = AsyncCatalogReserver(**to_catalog)
        with (
            closing(http_catalog),
            closing(reserver),
            httpx.Client(timeout=users_timeout, limits=limits) as client,
        ):
            app.state.catalog = catalog or http_catalog
            # Placement's reserve on the event loop; an injected client serves it in a thread.
            app.state.reserver = reserver if catalog is None else ThreadedReserver(catalog)
            app.state.users = UsersClient(
                client,
                base_url=resolved.users_url,
                service_token=token,
                timeout_seconds=resolved.users_timeout_seconds,
            )
            factory: sessionmaker[Session] = app.state.sessionmaker
            if resolved.recovery_interval_seconds > 0:
                with recovery_thread(
                    factory,
                    app.state.catalog,
                    interval_seconds=resolved.recovery_interval_seconds,
                    older_than_seconds=resolved.placing_deadline_seconds,
                    batch_size=resolved.recovery_batch_size,
                ):
                    yield
            else:
                yield

    spec = ServiceSpec(
        name="orders",
        schema=SCHEMA,
        alembic_ini=ALEMBIC_INI,
        routers=[router, internal_router],
        description="Orders: placement across services (stock reserved in catalog), status, stats.",
        extra_lifespan=lifespan,
    )
    return build_service_app(spec, settings)
