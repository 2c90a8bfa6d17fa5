"""The headers of a relayed answer, built in one pass by the proxy (gateway.proxy.Exchange):
the same as those the gateway adds to an answer it makes itself (Exchange.send)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.proxy import Exchange

UPSTREAM = [
    (b"date", b"Tue, 01 Dec 2026 17:00:00 GMT"),
    (b"server", b"uvicorn"),
    (b"content-length", b"2"),
    (b"content-type", b"application/json"),
    (b"x-request-id", b"upstream-id"),
    (b"Connection", b"keep-alive"),
    (b"location", b"http://10.0.0.7:8003/orders/5"),
]
SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


def exchange(scheme: str = "http") -> Exchange:
    async def send(_: Any) -> None:
        return None

    return Exchange(send, {"path": "/orders/", "scheme": scheme}, b"rid-1")


def test_relayed_answer_drops_the_servers_own_headers_and_adds_the_gateways() -> None:
    assert exchange().relayed_headers(UPSTREAM) == [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"location", b"/orders/5"),
        *SECURITY,
        (b"x-request-id", b"rid-1"),
    ]


def test_relayed_answer_over_https_gets_hsts() -> None:
    headers = exchange("https").relayed_headers([(b"content-length", b"0")])
    assert headers[-2:] == [
        (b"strict-transport-security", b"max-age=31536000"),
        (b"x-request-id", b"rid-1"),
    ]


def test_a_security_header_the_upstream_sets_is_kept_not_doubled() -> None:
    own = (b"Content-Security-Policy", b"default-src 'self'")
    headers = exchange().relayed_headers([(b"content-length", b"0"), own])
    names = [name.lower() for name, _ in headers]
    assert names.count(b"content-security-policy") == 1
    assert own in headers


def test_relayed_and_own_answers_get_the_same_headers() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    for scheme in ("http", "https"):
        own = Exchange(send, {"path": "/orders/", "scheme": scheme}, b"rid-1")
        start = {"type": "http.response.start", "status": 404, "headers": [(b"a", b"1")]}
        asyncio.run(own.send(start))
        assert own.status == 404
        relayed = exchange(scheme).relayed_headers([(b"a", b"1")])
        assert sent[-1]["headers"] == relayed
