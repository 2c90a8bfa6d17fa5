"""Gateway application factory: `uvicorn --factory gateway.main:create_app`.

The proxy path is plain ASGI (no routing, dependency injection or middleware stack per request);
FastAPI serves only the gateway's own endpoints. Lifespan events go to the FastAPI app, whose
lifespan opens one pooled session per upstream."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from fastapi import FastAPI
from prometheus_client import make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import GatewaySettings
from gateway.control import CONTROL_PATHS, control_app, control_router, fetch_spec
from gateway.openapi import MergedSpec, Spec
from gateway.proxy import Exchange, Proxy, Upstreams, make_pool
from gateway.ratelimit import make_rate_limiter
from shop_common.errors import install_problem_handlers
from shop_common.logs import configure_logging, log_access, reset_request_id, set_request_id
from shop_common.middleware import RequestMetrics, incoming_request_id
from shop_common.server import MULTIPROC_DIR, metrics_registry, settle_heap


class Gateway:
    """Request id in and out, security headers, access log and metrics around proxy or control."""

    def __init__(self, settings: GatewaySettings, control: ASGIApp, proxy: Proxy) -> None:
        self.control = control
        self.proxy = proxy
        self.log_all = settings.access_log == "all"
        self.log_errors = settings.access_log != "off"
        self.slow_seconds = settings.slow_request_seconds
        self._metrics = RequestMetrics("gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.control(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        token = set_request_id(request_id)
        start = time.perf_counter()
        path: str = scope["path"]
        # The answer's status and the headers the gateway adds (security, request id): set by
        # the proxy on the answers it relays, by Exchange.send on any other.
        exchange = Exchange(send, scope, request_id.encode())
        route = "gateway"
        try:
            if path in CONTROL_PATHS:
                await self.control(scope, receive, exchange.send)
            else:
                route = await self.proxy(scope, receive, exchange)
        finally:
            status = exchange.status
            elapsed = time.perf_counter() - start
            method = scope["method"]
            self._metrics.observe(method, route, status, elapsed)
            if self.log_all or (
                self.log_errors and (status >= 400 or elapsed >= self.slow_seconds)
            ):
                log_access(method, path, status, elapsed, route)
            reset_request_id(token)


class _SharedPortServer(ThreadingWSGIServer):
    allow_reuse_port = True  # SO_REUSEPORT: every worker listens, the kernel spreads the scrapes


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape on stderr (as prometheus_client's own listener)."""


def _metrics_listener(host: str, port: int) -> WSGIServer:
    """One process: prometheus_client's listener. Several workers (PROMETHEUS_MULTIPROC_DIR set):
    each worker opens the port with SO_REUSEPORT and answers with every worker's numbers, so any
    of them serves a scrape and the listener lives on while one worker restarts. A plain listener
    of another program on that port still makes the start fail."""
    registry = metrics_registry()
    if not os.environ.get(MULTIPROC_DIR):
        server: WSGIServer = start_http_server(port, host, registry)[0]
        return server
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listener = type("_Listener", (_SharedPortServer,), {"address_family": family[0][0]})
    server = make_server(host, port, make_wsgi_app(registry), listener, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def create_app(settings: GatewaySettings | None = None) -> ASGIApp:
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    upstreams = Upstreams(bases=settings.upstream_urls())
    limiter = make_rate_limiter(
        settings.redis_url,
        settings.login_rate_limit,
        settings.login_rate_window_seconds,
        settings.redis_key_prefix,
    )

    async def fetch(name: str) -> Spec | None:
        return await fetch_spec(upstreams, name, settings.health_timeout_seconds * 3)

    spec = MergedSpec(
        list(upstreams.bases),
        settings.routes,
        fetch,
        settings.openapi_cache_seconds,
        version("gateway"),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        upstreams.pools.update(
            {name: make_pool(settings, url) for name, url in upstreams.bases.items()}
        )
        # /metrics on its own listener, never on the public port (a private-network scrape).
        metrics = (
            _metrics_listener(settings.metrics_host, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )
        settle_heap()
        try:
            yield
        finally:
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
            for pool in upstreams.pools.values():
                pool.close()
            upstreams.pools.clear()
            await limiter.close()

    control = control_app(
        control_router(upstreams, spec, settings.health_timeout_seconds), lifespan
    )
    control.state.settings = settings
    install_problem_handlers(control)
    proxy = Proxy(settings, upstreams, limiter)
    app: ASGIApp = Gateway(settings, control, proxy)
    if settings.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )
    return app
