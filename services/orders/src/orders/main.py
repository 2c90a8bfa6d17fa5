"""Application factory: `uvicorn --factory orders.main:create_app`. Nothing happens at import."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from orders.config import OrdersSettings
from orders.db import SCHEMA
from shop_common.app import ServiceSpec, build_service_app

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    settings = settings or OrdersSettings()  # read from the environment
    spec = ServiceSpec(name="orders", schema=SCHEMA, alembic_ini=ALEMBIC_INI, routers=[])
    return build_service_app(spec, settings)
