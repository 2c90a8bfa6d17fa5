"""The gateway's own endpoints (FastAPI, off the hot path): health, metrics, merged docs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.openapi import MergedSpec, Spec
from gateway.proxy import Upstreams
from shop_common.docs import DOCS_PATHS, docs_router
from shop_common.errors import problem_response
from shop_common.upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

# /metrics is not here: it is served on its own listener (METRICS_PORT, gateway.metrics).
CONTROL_PATHS = frozenset(
    {"/health", "/health/live", "/health/ready", "/openapi.json", *DOCS_PATHS}
)


async def _get(
    upstreams: Upstreams, name: str, path: bytes, timeout_seconds: float
) -> UpstreamResponse:
    """GET through the upstream's pool; the caller reads and releases. Bounded as a whole."""
    async with asyncio.timeout(timeout_seconds):
        return await upstreams.pools[name].request(
            "GET", path, [(b"accept", b"application/json")], read_timeout=timeout_seconds
        )


async def check_upstream(
    upstreams: Upstreams, name: str, timeout_seconds: float
) -> tuple[str, dict[str, Any]]:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds):
            response = await _get(upstreams, name, b"/health/ready", timeout_seconds)
            try:
                await response.read()
            finally:
                response.release()
    except (UpstreamError, TimeoutError) as exc:
        latency = round((time.perf_counter() - start) * 1000, 2)
        reason = "timeout" if isinstance(exc, TimeoutError | UpstreamTimeout) else "unreachable"
        return name, {"status": "down", "error": reason, "latency_ms": latency}
    latency = round((time.perf_counter() - start) * 1000, 2)
    check: dict[str, Any] = {
        "status": "ok" if response.status == 200 else "down",
        "latency_ms": latency,
        "http_status": response.status,
    }
    return name, check


async def fetch_spec(upstreams: Upstreams, name: str, timeout_seconds: float) -> Spec | None:
    try:
        async with asyncio.timeout(timeout_seconds):
            response = await _get(upstreams, name, b"/openapi.json", timeout_seconds)
            try:
                body = await response.read()
            finally:
                response.release()
        if response.status != 200:
            return None
        data = json.loads(body)
    except (UpstreamError, TimeoutError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def control_router(
    upstreams: Upstreams, spec: MergedSpec, health_timeout_seconds: float
) -> APIRouter:
    router = APIRouter()

    @router.get("/health/live")
    async def health_live() -> dict[str, str]:
        return {"status": "ok", "service": "gateway"}

    async def _aggregate(request: Request) -> JSONResponse:
        results = await asyncio.gather(
            *(check_upstream(upstreams, name, health_timeout_seconds) for name in upstreams.bases)
        )
        checks = dict(results)
        if all(c["status"] == "ok" for c in checks.values()):
            return JSONResponse({"status": "ok", "service": "gateway", "checks": checks})
        down = sorted(name for name, c in checks.items() if c["status"] != "ok")
        return problem_response(
            503,
            "Service not ready",
            instance=request.url.path,
            type="/problems/not-ready",
            detail=f"upstream(s) not ready: {', '.join(down)}",
            service="gateway",
            checks=checks,
        )

    @router.get("/health")
    async def health(request: Request) -> JSONResponse:
        return await _aggregate(request)

    @router.get("/health/ready")
    async def health_ready(request: Request) -> JSONResponse:
        return await _aggregate(request)

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(await spec.get())

    router.include_router(docs_router("shop API"))  # /docs, /redoc and their assets: no CDN
    return router


def control_app(router: APIRouter, lifespan: Any) -> FastAPI:
    app = FastAPI(
        title="gateway", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.include_router(router)
    return app
