"""Application factory: `python -m shop_common.server catalog.main:create_app` (uvicorn with
`WEB_CONCURRENCY` workers, as the launcher and the image run it; `uvicorn --factory
catalog.main:create_app` runs one process). Nothing happens at import."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from catalog.categories.router import router as categories_router
from catalog.categories.router import tags_router
from catalog.config import CatalogSettings
from catalog.db import SCHEMA
from catalog.products.router import router as products_router
from catalog.reservations.router import router as reservations_router
from catalog.reservations.sweeper import sweeper_lifespan
from shop_common.app import ServiceSpec, build_service_app

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()  # read from the environment
    spec = ServiceSpec(
        name="catalog",
        schema=SCHEMA,
        alembic_ini=ALEMBIC_INI,
        routers=[products_router, reservations_router, categories_router, tags_router],
        description="Categories, products, tags and stock reservations.",
        extra_lifespan=sweeper_lifespan,
    )
    return build_service_app(spec, settings)
