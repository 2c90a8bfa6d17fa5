"""Pure ASGI middleware: request id in and out, one JSON access line, Prometheus metrics."""

from __future__ import annotations

import random
import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop_common.errors import problem_for
from shop_common.logs import current_request_id, log_access, reset_request_id, set_request_id

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter(
    "shop_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Time to handle an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def incoming_request_id(scope: Scope) -> str:
    """Keep a well-formed incoming id; replace anything else, so ids are safe to log and echo.
    Ids are correlation handles, not secrets: a PRNG is enough and saves a syscall per request."""
    value: bytes
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _VALID_ID.match(value):
                return value.decode()
            break
    return f"{random.getrandbits(128):032x}"


class RequestMetrics:
    """REQUESTS and LATENCY for one service. labels() hashes the values and takes a lock on every
    call, so each (method, route, status) child is resolved once; routes are templates and methods
    a short list, so this stays small (bounded anyway)."""

    MAX_CHILDREN = 1000

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                REQUESTS.labels(self.service, method, route, str(status)),
                LATENCY.labels(self.service, method, route),
            )
            if len(self._children) < self.MAX_CHILDREN:
                self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._metrics = RequestMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        token = set_request_id(request_id)
        start = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}
        started: dict[str, bool] = {}
        encoded_id = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started["status"] = True
                status_holder["status"] = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", encoded_id))
                message["headers"] = headers
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                # An error no handler took. Answered here, inside the request's context, so the
                # 500 and its log line carry the request id (Starlette's outermost handler runs
                # after this middleware has left the context).
                if "status" in started:
                    raise  # the response is under way: the server can only drop the connection
                await problem_for(Request(scope), exc)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope.get("method", "")
            status = status_holder["status"]
            self._metrics.observe(method, route, status, elapsed)
            log_access(method, scope.get("path", ""), status, elapsed, route)
            reset_request_id(token)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


def propagation_headers() -> dict[str, str]:
    """Headers an outbound call to another service carries: the current request id."""
    request_id = current_request_id()
    return {"X-Request-ID": request_id} if request_id else {}
