"""A tiny upstream for gateway tests, run by uvicorn in its own process (`STUB_NAME` picks the
role). It echoes what it received, and under `/<prefix>/_slow`, `_big`, `_drip` and `_hop` it
behaves the way the gateway must cope with. Its OpenAPI spec comes from a small FastAPI app."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, create_model
from starlette.types import Receive, Scope, Send

CHUNK = 64 * 1024


class UserCreate(BaseModel):
    username: str
    password: str


class UserSummary(BaseModel):
    id: int
    email: str


class ReservationCreate(BaseModel):
    product_id: int
    quantity: int


def _summary(service: str) -> type[BaseModel]:
    """A model named `Summary` whose fields differ per service: a component name collision."""
    return create_model("Summary", id=(int, ...), **{f"{service}_label": (str, ...)})  # type: ignore[call-overload, no-any-return]


def _health(router: APIRouter) -> None:
    @router.get("/health/live")
    def health_live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/health/ready")
    def health_ready() -> dict[str, str]:
        return {"status": "ok"}


def spec_app(name: str) -> FastAPI:
    app = FastAPI(title=name, generate_unique_id_function=lambda r: f"{name}-{r.name}")
    summary = _summary(name)
    product_summary = create_model("ProductSummary", id=(int, ...), summary=(summary, ...))
    order_summary = create_model("OrderSummary", id=(int, ...), summary=(summary, ...))
    router = APIRouter()
    _health(router)
    if name == "users":

        @router.post("/users/", status_code=201, tags=["users"])
        def create_user(body: UserCreate) -> UserSummary:
            raise NotImplementedError

        @router.get("/internal/users", tags=["internal"])
        def internal_users(ids: str) -> list[UserSummary]:
            raise NotImplementedError

        @router.get("/.well-known/jwks.json", tags=["auth"])
        def jwks() -> dict[str, Any]:
            raise NotImplementedError

    elif name == "catalog":

        @router.get("/products/{product_id}", tags=["products"], response_model=product_summary)
        def get_product(product_id: int) -> Any:
            raise NotImplementedError

        @router.post("/internal/reservations", tags=["internal"])
        def create_reservation(body: ReservationCreate) -> dict[str, str]:
            raise NotImplementedError

    else:

        @router.get("/orders/{order_id}", tags=["orders"], response_model=order_summary)
        def get_order(order_id: int) -> Any:
            raise NotImplementedError

        @router.get("/products/shadow", tags=["products"])  # not routed to orders: must be dropped
        def shadow_product() -> dict[str, str]:
            raise NotImplementedError

    app.include_router(router)
    return app


async def _read_body(receive: Receive) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        digest.update(chunk)
        if not message.get("more_body", False):
            break
    return size, digest.hexdigest()


async def _json(send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


def create_stub() -> Any:
    name = os.environ["STUB_NAME"]
    spec = spec_app(name).openapi()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        request_id = dict(headers).get("x-request-id", "-")
        print(f"stub {name} {scope['method']} {path} request_id={request_id}", flush=True)  # noqa: T201 - the log line tests look for
        if path == "/health/ready":
            await _json(send, 200, {"status": "ok", "service": name}, [])
        elif path == "/openapi.json":
            await _json(send, 200, spec, [])
        elif path.endswith("/_slow"):
            await asyncio.sleep(float(query.get("seconds", "2")))
            await _json(send, 200, {"slept": True}, [])
        elif path.endswith("/_big"):
            total = int(query["bytes"])
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"content-type", b"application/octet-stream")]})
            sent = 0
            block = b"x" * CHUNK
            while sent < total:
                part = block[: min(CHUNK, total - sent)]
                sent += len(part)
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path.endswith("/_crash"):
            # What a service does on an unhandled exception: Starlette's ServerErrorMiddleware
            # sends a complete keep-alive 500, then uvicorn logs the error and closes the socket.
            await _read_body(receive)
            await _json(send, 500, {"detail": "Internal Server Error"}, [])
            await asyncio.sleep(float(query.get("close_after", "0.3")))
            raise RuntimeError("stub crash after answering")
        elif path in ("/products", "/orders"):
            # Starlette's redirect_slashes: an absolute URL from the Host header, or without one
            # from the server's own (internal) address.
            server_host, server_port = scope["server"]
            host = dict(headers).get("host") or f"{server_host}:{server_port}"
            location = f"http://{host}{path}/".encode("latin-1")
            await _json(send, 307, {}, [(b"location", location)])
        elif path.endswith("/_drip"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await asyncio.sleep(float(query.get("seconds", "1.5")))
            await send({"type": "http.response.body", "body": b"last"})
        else:
            size, digest = await _read_body(receive)
            extra: list[tuple[bytes, bytes]] = []
            if path.endswith("/_hop"):
                extra = [
                    (b"keep-alive", b"timeout=5"),
                    (b"proxy-authenticate", b"Basic"),
                    (b"x-upstream", name.encode()),
                ]
            await _json(
                send,
                200,
                {
                    "service": name,
                    "method": scope["method"],
                    "path": path,
                    "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
                    "query": scope["query_string"].decode("latin-1"),
                    "headers": headers,
                    "body_bytes": size,
                    "body_sha256": digest,
                },
                extra,
            )

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return app
