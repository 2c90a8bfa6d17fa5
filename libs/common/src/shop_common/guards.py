"""Request input guards every service gets (pure ASGI, before routing): 422 problem+json for
- NUL or text that is not UTF-8 in the query string: PostgreSQL text cannot hold NUL, and
  Starlette would silently turn undecodable bytes into U+FFFD;
- a JSON body nested deeper than MAX_JSON_DEPTH: deep nesting costs recursion in the parser and
  in every validator that walks the value, and no request of this API needs more than a few levels.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shop_common.errors import problem_response

MAX_JSON_DEPTH = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest more than `limit` levels (strings do not count). Cheap for
    ordinary bodies: a count decides when there are fewer brackets than the limit."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    depth = 0
    for char in brackets:
        if char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def query_problem(query_string: bytes) -> str | None:
    """Why the query string is refused, or None when it is acceptable."""
    if not query_string:
        return None
    if b"%" not in query_string and query_string.isascii() and b"\x00" not in query_string:
        return None  # nothing encoded: the common case costs three scans
    try:
        text = query_string.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return "the query string is not valid UTF-8"
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        return "query parameters must not contain NUL characters"
    return None


def _is_json(scope: Scope) -> bool:
    """FastAPI parses a body as JSON when it has no content type or a (+)json one."""
    name: bytes
    value: bytes
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return True


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_json_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Paths are left to the routes: a lookup by an impossible key is a 404 there, by design.
        problem = query_problem(scope.get("query_string", b""))
        if problem is not None:
            await self._reject(scope, receive, send, problem, ["query"], "query_invalid")
            return
        if scope["method"] not in _BODY_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # FastAPI reads the whole JSON body too; the server bounds what arrives
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth_exceeds(body, self.max_json_depth):
            await self._reject(
                scope,
                receive,
                send,
                f"the JSON body nests deeper than {self.max_json_depth} levels",
                ["body"],
                "json_too_deep",
            )
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)

    @staticmethod
    async def _reject(
        scope: Scope, receive: Receive, send: Send, msg: str, loc: list[str], kind: str
    ) -> None:
        response = problem_response(
            422,
            "Invalid request",
            instance=scope.get("path", ""),
            type="/problems/validation-error",
            detail=msg,
            errors=[{"loc": loc, "msg": msg, "type": kind}],
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending: list[Any] = list(messages)

    async def receive() -> Message:
        if pending:
            message: Message = pending.pop(0)
            return message
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
