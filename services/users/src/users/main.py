"""Application factory: `uvicorn --factory users.main:create_app`. Nothing happens at import."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from shop_common.app import ServiceSpec, build_service_app
from users.config import UsersSettings
from users.db import SCHEMA

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()  # read from the environment
    spec = ServiceSpec(name="users", schema=SCHEMA, alembic_ini=ALEMBIC_INI, routers=[])
    return build_service_app(spec, settings)
