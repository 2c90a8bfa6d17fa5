"""Liveness, readiness (database through PgBouncer + migrations at head) and Prometheus metrics."""

from __future__ import annotations

import asyncio
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
from shop_common.server import metrics_registry


def alembic_heads(alembic_ini: Path) -> frozenset[str]:
    """Read the migration heads from the service's scripts (once, at app creation)."""
    config = Config(str(alembic_ini))
    config.set_main_option("script_location", str(alembic_ini.parent / "migrations"))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


# A dead PostgreSQL behind PgBouncer does not refuse: the login or the query waits in
# PgBouncer's queue. Readiness answers "down" after this long instead of waiting for it.
READINESS_TIMEOUT_SECONDS = 1.5


class ReadinessProbe:
    def __init__(
        self,
        schema: str,
        expected_heads: frozenset[str],
        timeout_seconds: float = READINESS_TIMEOUT_SECONDS,
    ) -> None:
        self.schema = schema
        self.expected_heads = expected_heads
        self.timeout_seconds = timeout_seconds
        # One check in flight at a time: a hung database holds one worker thread, not one per poll.
        self._running: asyncio.Future[tuple[bool, dict[str, Any]]] | None = None

    async def check_within_deadline(self, engine: Engine) -> tuple[bool, dict[str, Any]]:
        """`check` in a worker thread, "down" (error "timeout") after `timeout_seconds`."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(run_in_threadpool(self.check, engine))
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout_seconds)
        except TimeoutError:
            return False, {
                "database": {"status": "down", "error": "timeout"},
                "migrations": {"status": "unknown"},
            }

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
        ok, checks = await probe.check_within_deadline(engine(request))
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

    registry = metrics_registry()  # every worker's numbers when WEB_CONCURRENCY > 1

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
