"""A small app for test_workers.py, served by `python -m shop_common.server` with several worker
processes: /pid names the worker that answered, /metrics is shop_common's handler, and every
request is counted by shop_common's middleware."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from sqlalchemy import Engine

from shop_common.health import ReadinessProbe, health_router
from shop_common.middleware import RequestContextMiddleware


def _no_engine(_: Request) -> Engine:
    raise RuntimeError("readiness is not asked here")


def create_app() -> FastAPI:
    app = FastAPI()
    app.include_router(health_router("workers", ReadinessProbe("none", frozenset()), _no_engine))

    @app.get("/pid")
    async def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    app.add_middleware(RequestContextMiddleware, service="workers")
    return app


def broken() -> FastAPI:
    raise RuntimeError("this app cannot be built")
