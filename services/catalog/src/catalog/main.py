"""Application factory: `uvicorn --factory catalog.main:create_app`. Nothing happens at import."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from catalog.config import CatalogSettings
from catalog.db import SCHEMA
from shop_common.app import ServiceSpec, build_service_app

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()  # read from the environment
    spec = ServiceSpec(name="catalog", schema=SCHEMA, alembic_ini=ALEMBIC_INI, routers=[])
    return build_service_app(spec, settings)
