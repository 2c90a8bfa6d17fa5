"""A minimal upstream for quick gateway measurements without a database:
`uvicorn bench.gateway_stub:app` answers GET /products/{id} with a fixed product of about the
size the real catalog returns. The final report uses the real catalog (`--upstream stack`)."""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

_BODY = json.dumps(
    {
        "id": 1,
        "name": "Bench mug",
        "slug": "bench-mug",
        "sku": "BENCH-MUG-1",
        "description": "A mug that exists to be fetched many times.",
        "price": "12.50",
        "stock_quantity": 100,
        "is_active": True,
        "category": {"id": 1, "name": "Kitchen", "slug": "kitchen"},
        "tags": [{"id": 1, "name": "bench"}],
        "created_at": "2026-11-26T12:00:00Z",
        "updated_at": "2026-11-26T12:00:00Z",
    }
).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
