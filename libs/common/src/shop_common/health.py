"""Liveness, readiness (database through PgBouncer + migrations at head) and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from shop_common.errors import problem_response


def alembic_heads(alembic_ini: Path) -> frozenset[str]:
    """Read the migration heads from the service's scripts (once, at app creation)."""
    config = Config(str(alembic_ini))
    config.set_main_option("script_location", str(alembic_ini.parent / "migrations"))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


class ReadinessProbe:
    def __init__(self, schema: str, expected_heads: frozenset[str]) -> None:
        self.schema = schema
        self.expected_heads = expected_heads

    def check(self, engine: Engine) -> tuple[bool, dict[str, Any]]:
        start = time.perf_counter()
        try:
            with engine.connect() as conn:
                current = set(
                    conn.execute(
                        text(f"SELECT version_num FROM {self.schema}.alembic_version")  # noqa: S608 - schema is a constant
                    ).scalars()
                )
        except SQLAlchemyError as exc:
            return False, {
                "database": {
                    "status": "down",
                    "error": type(getattr(exc, "orig", None) or exc).__name__,
                },
                "migrations": {"status": "unknown"},
            }
        latency = round((time.perf_counter() - start) * 1000, 2)
        at_head = current == set(self.expected_heads)
        return at_head, {
            "database": {"status": "ok", "latency_ms": latency},
            "migrations": {
                "status": "ok" if at_head else "pending",
                "current": sorted(current),
                "expected": sorted(self.expected_heads),
            },
        }


def health_router(
    service: str, probe: ReadinessProbe, engine: Callable[[Request], Engine]
) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", operation_id=f"{service}-health_live")
    async def health_live() -> dict[str, str]:
        return {"status": "ok", "service": service}

    async def _ready(request: Request) -> JSONResponse:
        ok, checks = await run_in_threadpool(probe.check, engine(request))
        if ok:
            return JSONResponse({"status": "ok", "service": service, "checks": checks})
        return problem_response(
            503,
            "Service not ready",
            instance=request.url.path,
            type="/problems/not-ready",
            detail="database unreachable or migrations not at head",
            service=service,
            checks=checks,
        )

    @router.get("/health/ready", operation_id=f"{service}-health_ready")
    async def health_ready(request: Request) -> JSONResponse:
        return await _ready(request)

    @router.get("/health", operation_id=f"{service}-health")
    async def health(request: Request) -> JSONResponse:
        return await _ready(request)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
