"""A tiny ASGI app for test_server.py, served by uvicorn with the guarded protocol: it answers
with the size of the request body it read and the number of header fields it saw. Two paths shape
the answer for the one-write tests: /late-body sends its head, then its body 0.4 s later, in
two chunks; /fail-after-head raises once its head is sent."""

from __future__ import annotations

import asyncio
import json

from starlette.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = json.dumps({"body_bytes": size, "fields": len(scope["headers"])}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if scope["path"] == "/fail-after-head":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        raise RuntimeError("failed after the head")
    if scope["path"] == "/late-body":
        await send({"type": "http.response.start", "status": 200, "headers": headers[:1]})
        await asyncio.sleep(0.4)
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
