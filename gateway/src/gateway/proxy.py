"""The hot path: a plain ASGI handler that sends a request to its upstream and streams the answer back.

One pooled client per upstream (shop_common.upstream, built in the lifespan). A request body is read
whole from the client (bounded in size and time) before an upstream connection is taken, so a
slow client holds only its own socket. Headers stay bytes from the ASGI server to the upstream
socket and back; nothing is retried except an idempotent request (or a POST with an
Idempotency-Key) whose kept-alive connection was found closed before any byte of the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from fastapi.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.config import GatewaySettings
from gateway.ratelimit import RateLimiter
from gateway.routing import resolve
from shop_common.errors import problem_response
from shop_common.upstream import Headers, UpstreamBusy, UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger("gateway.proxy")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway itself; a client's value is never passed on.
_REPLACED_REQUEST = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
# Expect: the gateway's own server already answered 100-continue to the client.
_DROP_REQUEST = HOP_BY_HOP | _REPLACED_REQUEST | {b"x-request-id", b"content-length", b"expect"}
# uvicorn adds its own date/server; the request id is added by the gateway on the way out.
_DROP_RESPONSE = HOP_BY_HOP | {b"date", b"server", b"x-request-id"}
SMALL_BODY_BYTES = 64 * 1024  # answers read whole below this: one send instead of a loop
SECURITY_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_HSTS = (b"strict-transport-security", b"max-age=31536000")
# Added to every relayed answer (a proxied path is never /docs), unless the upstream set one.
_RELAYED_EXTRA: Headers = [*SECURITY_HEADERS, _API_CSP]
_RELAYED_EXTRA_TLS: Headers = [*_RELAYED_EXTRA, _HSTS]
_ADDED_NAMES = frozenset(name for name, _ in _RELAYED_EXTRA_TLS)
_SCHEMES = {"http": b"http", "https": b"https"}
LOGIN_PATHS = frozenset({"/auth/token", "/auth/token/"})
# Prefixes whose POST honours Idempotency-Key (DESIGN §4): only those may be sent again.
KEYED_POST_PREFIXES = frozenset({"orders"})


class Exchange:
    """One request's answer as the gateway sends it: its status (500 until one is sent) and the
    headers the gateway adds, security headers and the request id, unless already present."""

    __slots__ = ("raw_send", "request_id", "scope", "status")

    def __init__(self, send: Send, scope: Scope, request_id: bytes) -> None:
        self.raw_send = send
        self.scope = scope
        self.request_id = request_id
        self.status = 500

    def extra(self) -> Headers:
        extra = list(SECURITY_HEADERS)
        if self.scope["path"] != "/docs":  # Swagger UI needs its scripts; everything else is data
            extra.append(_API_CSP)
        if self.scope.get("scheme") == "https":
            extra.append(_HSTS)
        extra.append((b"x-request-id", self.request_id))
        return extra

    async def send(self, message: Message) -> None:
        """ASGI send for an answer made here (control endpoints, problems): adds the headers."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            headers.extend(h for h in self.extra() if h[0] not in present)
            message["headers"] = headers
        await self.raw_send(message)

    def relayed_headers(self, upstream: Headers) -> Headers:
        """An upstream answer's headers as sent on: hop-by-hop and the server's own dropped,
        Location made relative, then what the gateway adds, in one pass."""
        out: Headers = []
        seen: set[bytes] | None = None
        for name, value in upstream:
            lowered = name.lower()
            if lowered in _DROP_RESPONSE:
                continue
            if lowered in _ADDED_NAMES:
                if seen is None:
                    seen = set()
                seen.add(lowered)
            elif lowered == b"location":
                value = public_location(value)
            out.append((name, value))
        extra = _RELAYED_EXTRA_TLS if self.scope.get("scheme") == "https" else _RELAYED_EXTRA
        if seen is None:
            out += extra
        else:
            out += [h for h in extra if h[0] not in seen]
        out.append((b"x-request-id", self.request_id))
        return out


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


@dataclass
class Upstreams:
    """One pool per upstream; filled by the lifespan, empty before it runs."""

    bases: dict[str, str]
    pools: dict[str, UpstreamPool] = field(default_factory=dict)


def make_pool(settings: GatewaySettings, base_url: str) -> UpstreamPool:
    return UpstreamPool(
        base_url,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        read_timeout=settings.upstream_read_timeout_seconds,
        keepalive_seconds=settings.upstream_keepalive_seconds,
        size=settings.upstream_pool_size,
        acquire_timeout=settings.upstream_acquire_timeout_seconds,
    )


def _problem(status: int, title: str, path: str, **extra: Any) -> JSONResponse:
    return problem_response(status, title, instance=path, **extra)


class BodyTimeout(Exception):
    pass


async def read_body(
    receive: Receive, limit: int, idle_seconds: float, total_seconds: float
) -> bytes:
    """The whole request body, before any upstream connection is taken: a slow client holds
    only its own socket. BodyTooLarge past `limit`, BodyTimeout after `idle_seconds` without a
    byte or `total_seconds` in all, ClientGone when the client leaves."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_seconds
    chunks: list[bytes] = []
    size = 0
    while True:
        wait = min(idle_seconds, deadline - loop.time())
        if wait <= 0:
            raise BodyTimeout
        try:
            async with asyncio.timeout(wait):
                message = await receive()
        except TimeoutError as exc:
            raise BodyTimeout from exc
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def public_location(value: bytes) -> bytes:
    """An upstream's absolute redirect target made relative to the gateway's own origin.

    The services build absolute URLs from the Host they were sent (the client's, unchecked) or,
    without one, from their own internal address; neither may reach the client. The services
    never redirect off-site, so the scheme and authority are always dropped."""
    parts = urlsplit(value)
    if not parts.scheme and not parts.netloc:
        return value
    relative = urlunsplit((b"", b"", parts.path or b"/", parts.query, parts.fragment))
    # `//evil.com/x` (a network-path reference) must not survive as a path either
    return b"/" + relative.lstrip(b"/")


class Proxy:
    def __init__(
        self, settings: GatewaySettings, upstreams: Upstreams, limiter: RateLimiter
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.limiter = limiter
        self.routes: Mapping[str, str] = dict(settings.routes)
        self.methods = {prefix: settings.methods_for(prefix) for prefix in self.routes}
        self.max_body = settings.max_body_bytes
        self.max_header_bytes = settings.max_header_bytes
        self.max_header_count = settings.max_header_count
        self.trust_forwarded_for = settings.trust_forwarded_for

    async def __call__(self, scope: Scope, receive: Receive, exchange: Exchange) -> str:
        """Answer the request; returns the route label used in metrics (the upstream or a reason)."""
        send = exchange.send  # for answers made here; a relayed answer goes out with its headers
        raw: bytes | None = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else scope["path"]
        target = resolve(raw_path, self.routes)
        if target is None:
            await _problem(404, "Not Found", raw_path, detail="No such resource.")(
                scope, receive, send
            )
            return "<unmatched>"
        method: str = scope["method"]
        allowed = self.methods[target.prefix]
        if method not in allowed:
            await _problem(
                405,
                "Method Not Allowed",
                target.path,
                detail=f"{method} is not allowed here.",
                headers={"Allow": ", ".join(sorted(allowed))},
            )(scope, receive, send)
            return target.upstream

        headers: Headers = []
        header_bytes = 0
        content_length: bytes | None = None
        has_body = False
        forwarded_for: bytes | None = None
        host: bytes | None = None
        hop: list[bytes] | None = None
        idempotency_key = False
        request_headers: Headers = scope["headers"]
        for name, value in request_headers:
            header_bytes += len(name) + len(value)
            if name in _DROP_REQUEST:
                if name == b"content-length":
                    content_length = value
                elif name == b"transfer-encoding":
                    has_body = True
                elif name == b"connection":
                    if hop is None:
                        hop = []
                    hop.extend([t.strip().lower() for t in value.split(b",")])
                elif name == b"x-forwarded-for":
                    forwarded_for = value
                continue
            if name == b"host":
                host = value
            elif name == b"idempotency-key":
                idempotency_key = True
            headers.append((name, value))
        if header_bytes > self.max_header_bytes or len(request_headers) > self.max_header_count:
            await _problem(
                431,
                "Request Header Fields Too Large",
                target.path,
                detail=f"Headers are limited to {self.max_header_bytes} bytes "
                f"and {self.max_header_count} fields.",
            )(scope, receive, send)
            return target.upstream
        if hop:
            headers = [(k, v) for k, v in headers if k not in hop]

        client = scope.get("client")
        peer = (client[0] if client else "unknown").encode()
        client_ip = peer
        if self.trust_forwarded_for and forwarded_for:
            client_ip = forwarded_for.split(b",", 1)[0].strip() or peer
            forwarded_for = forwarded_for + b", " + peer
        else:
            forwarded_for = peer
        headers.append((b"x-forwarded-for", forwarded_for))
        scheme: str = scope.get("scheme", "http")
        headers.append((b"x-forwarded-proto", _SCHEMES.get(scheme) or scheme.encode()))
        if host is not None:
            headers.append((b"x-forwarded-host", host))
        headers.append((b"x-request-id", exchange.request_id))

        # Compared decoded: `/auth/%74oken` is the same login to the upstream.
        if method == "POST" and target.prefix == "auth" and unquote(target.path) in LOGIN_PATHS:
            retry_after = await self.limiter.hit(client_ip.decode("latin-1"))
            if retry_after is not None:
                await _problem(
                    429,
                    "Too Many Requests",
                    target.path,
                    type="/problems/too-many-requests",
                    detail="Too many login attempts from this address; retry later.",
                    retry_after=retry_after,
                    headers={"Retry-After": str(retry_after)},
                )(scope, receive, send)
                return target.upstream

        body: bytes | None = None
        if content_length is not None or has_body:
            try:
                if content_length is not None:
                    if not content_length.isdigit():
                        await _problem(
                            400, "Bad Request", target.path, detail="Invalid Content-Length."
                        )(scope, receive, send)
                        return target.upstream
                    if int(content_length) > self.max_body:
                        raise BodyTooLarge
                    has_body = int(content_length) > 0
                if has_body:
                    body = await read_body(
                        receive,
                        self.max_body,
                        self.settings.body_idle_timeout_seconds,
                        self.settings.body_read_timeout_seconds,
                    )
            except BodyTooLarge:
                await self._too_large(scope, receive, send, target.path)
                return target.upstream
            except BodyTimeout:
                await _problem(
                    408,
                    "Request Timeout",
                    target.path,
                    type="/problems/request-timeout",
                    detail="The request body was not received in time.",
                    headers={"Connection": "close"},
                )(scope, receive, send)
                return target.upstream
            except ClientGone:
                return target.upstream

        query: bytes = scope.get("query_string", b"")
        request_target = target.path.encode("latin-1")
        if query:
            request_target += b"?" + query
        pool = self.upstreams.pools[target.upstream]
        started = False
        try:
            # A POST /orders/ carrying an Idempotency-Key is deduplicated by orders (DESIGN §4):
            # sending it again after a dropped kept-alive connection cannot place it twice.
            # (catalog and users ignore the header: their POSTs are never sent twice.)
            keyed = method == "POST" and idempotency_key and target.prefix in KEYED_POST_PREFIXES
            response = await pool.request(
                method, request_target, headers, body, idempotent=True if keyed else None
            )
        except UpstreamError as exc:
            await self._upstream_failed(scope, receive, send, target.upstream, target.path, exc)
            return target.upstream
        try:
            raw_send = exchange.raw_send
            out = exchange.relayed_headers(response.headers)
            size = response.content_length
            if method == "HEAD" or (size is not None and size <= SMALL_BODY_BYTES):
                payload = response.body_if_complete()
                if payload is None:
                    payload = await response.read()
                exchange.status = response.status
                await raw_send(
                    {"type": "http.response.start", "status": response.status, "headers": out}
                )
                started = True
                await raw_send({"type": "http.response.body", "body": payload})
                return target.upstream
            exchange.status = response.status
            await raw_send(
                {"type": "http.response.start", "status": response.status, "headers": out}
            )
            started = True
            async for part in response.chunks():
                await raw_send({"type": "http.response.body", "body": part, "more_body": True})
            await raw_send({"type": "http.response.body", "body": b""})
            return target.upstream
        except UpstreamError as exc:
            if started:  # the status is gone; closing the connection is the only signal left
                log.warning("upstream %s failed mid-response: %s", target.upstream, exc)
                raise
            await self._upstream_failed(scope, receive, send, target.upstream, target.path, exc)
            return target.upstream
        finally:
            response.release()

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        await _problem(
            413,
            "Content Too Large",
            path,
            type="/problems/content-too-large",
            detail=f"The request body is limited to {self.max_body} bytes.",
            max_bytes=self.max_body,
            headers={"Connection": "close"},  # the rest of the body is not worth reading
        )(scope, receive, send)

    async def _upstream_failed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: str,
        path: str,
        exc: UpstreamError,
    ) -> None:
        headers: dict[str, str] | None = None
        if isinstance(exc, UpstreamBusy):
            status, title, slug = 503, "Service Unavailable", "upstream-busy"
            detail = f"The {upstream} service is at its concurrency limit; retry shortly."
            headers = {"Retry-After": "1"}
        elif isinstance(exc, UpstreamTimeout):
            status, title, slug = 504, "Gateway Timeout", "upstream-timeout"
            detail = f"The {upstream} service did not answer in time."
        else:
            status, title, slug = 502, "Bad Gateway", "upstream-unavailable"
            detail = f"The {upstream} service cannot be reached."
        log.warning("upstream %s failed: %s", upstream, exc)
        await _problem(
            status,
            title,
            path,
            type=f"/problems/{slug}",
            detail=detail,
            upstream=upstream,
            headers=headers,
        )(scope, receive, send)
