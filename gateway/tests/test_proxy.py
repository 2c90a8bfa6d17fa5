"""Proxying through real processes: headers, request ids, bodies and their limits, streaming,
and what the client sees when an upstream is down or slow."""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import GatewayFactory, Process

MiB = 1024 * 1024


def echoed_headers(response: httpx.Response) -> dict[str, str]:
    headers: dict[str, str] = dict(response.json()["headers"])
    return headers


def test_request_id_is_kept_forwarded_and_returned(client: httpx.Client) -> None:
    response = client.get("/products/5", headers={"X-Request-ID": "req-abc.123"})

    assert response.headers["x-request-id"] == "req-abc.123"
    assert echoed_headers(response)["x-request-id"] == "req-abc.123"


def test_request_id_is_created_when_absent_and_upstream_sees_the_same(
    client: httpx.Client,
) -> None:
    response = client.get("/products/5")

    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert echoed_headers(response)["x-request-id"] == request_id


def test_malformed_request_id_is_replaced(client: httpx.Client) -> None:
    response = client.get("/products/5", headers={"X-Request-ID": "bad id with spaces"})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_request_id_reaches_the_upstream_log(
    client: httpx.Client, stubs: dict[str, Process]
) -> None:
    client.get("/orders/77", headers={"X-Request-ID": "trace-me-777"})

    assert "stub orders GET /orders/77 request_id=trace-me-777" in stubs["orders"].log()


def test_forwarded_headers_are_set_and_client_values_replaced(
    client: httpx.Client, gateway: Process
) -> None:
    response = client.get(
        "/categories/",
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )

    headers = echoed_headers(response)
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == gateway.url.removeprefix("http://")
    assert headers["host"] == gateway.url.removeprefix("http://")
    assert "forwarded" not in headers


def test_hop_by_hop_headers_are_stripped_both_ways(client: httpx.Client) -> None:
    response = client.get(
        "/users/_hop",
        headers={
            "Connection": "keep-alive, X-Hop-Token",
            "X-Hop-Token": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Authorization": "Bearer end-to-end",
        },
    )

    sent = echoed_headers(response)
    for name in ("x-hop-token", "keep-alive", "te", "proxy-authorization"):
        assert name not in sent
    assert sent["authorization"] == "Bearer end-to-end"
    assert "proxy-authenticate" not in response.headers
    assert response.headers["x-upstream"] == "users"


def test_security_headers_are_added(client: httpx.Client) -> None:
    response = client.get("/tags/")

    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )


def test_head_is_forwarded_without_a_body(client: httpx.Client) -> None:
    response = client.head("/products/1")

    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_json_body_is_forwarded_intact(client: httpx.Client) -> None:
    body = b'{"items": [{"product_id": 1, "quantity": 2}]}'

    response = client.post("/orders/", content=body, headers={"Content-Type": "application/json"})

    data = response.json()
    assert data["method"] == "POST"
    assert data["body_bytes"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed_headers(response)["content-type"] == "application/json"


def test_body_of_exactly_the_limit_is_accepted(client: httpx.Client) -> None:
    body = b"a" * MiB

    response = client.post("/products/", content=body)

    assert response.status_code == 200
    assert response.json()["body_bytes"] == MiB
    assert response.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_body_over_the_limit_is_413_before_reaching_the_upstream(
    client: httpx.Client, stubs: dict[str, Process]
) -> None:
    response = client.post(
        "/products/", content=b"a" * (MiB + 1), headers={"X-Request-ID": "too-big-413"}
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["max_bytes"] == MiB
    assert "too-big-413" not in stubs["catalog"].log()


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = b"z" * min(size, total - sent)
        sent += len(part)
        yield part


def test_chunked_body_without_length_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post("/products/", content=_chunks(2 * MiB))

    assert response.status_code == 413
    assert response.json()["type"] == "/problems/content-too-large"


def test_chunked_body_under_the_limit_is_streamed_through(client: httpx.Client) -> None:
    total = 700 * 1024

    response = client.post("/products/", content=_chunks(total))

    assert response.status_code == 200
    assert response.json()["body_bytes"] == total
    assert response.json()["body_sha256"] == hashlib.sha256(b"z" * total).hexdigest()


def test_oversized_headers_are_431(client: httpx.Client) -> None:
    response = client.get("/products/1", headers={f"X-Filler-{i}": "v" * 1000 for i in range(20)})

    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"


def test_response_is_streamed_not_buffered(client: httpx.Client) -> None:
    start = time.monotonic()
    with client.stream("GET", "/products/_drip", params={"seconds": "2"}) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - start
        rest = b"".join(chunks)

    assert first == b"first;"
    assert first_at < 1.5  # the upstream waits 2 s before the rest
    assert rest == b"last"


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_large_response_passes_with_bounded_gateway_memory(
    client: httpx.Client, gateway: Process
) -> None:
    total = 64 * MiB
    before = _peak_rss_kib(gateway.proc.pid)

    received = 0
    with client.stream("GET", "/products/_big", params={"bytes": str(total)}) as response:
        for chunk in response.iter_raw():
            received += len(chunk)

    assert response.status_code == 200
    assert received == total
    assert _peak_rss_kib(gateway.proc.pid) - before < 24 * 1024  # far below the 64 MiB passed on


def test_slow_upstream_is_504_naming_it(client: httpx.Client) -> None:
    start = time.monotonic()

    response = client.get("/products/_slow", params={"seconds": "8"})

    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["upstream"] == "catalog"
    assert response.json()["type"] == "/problems/upstream-timeout"
    assert 2.9 < time.monotonic() - start < 6  # UPSTREAM_READ_TIMEOUT_SECONDS=3


@pytest.fixture(scope="module")
def gateway_without_orders(start_gateway: GatewayFactory, refused_url: str) -> Process:
    return start_gateway(orders_url=refused_url)


def test_refused_upstream_is_502_naming_it(gateway_without_orders: Process) -> None:
    response = httpx.post(gateway_without_orders.url + "/orders/", json={"items": []})

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["upstream"] == "orders"
    assert body["type"] == "/problems/upstream-unavailable"
    assert body["request_id"] == response.headers["x-request-id"]


def test_other_upstreams_still_answer_when_one_is_down(gateway_without_orders: Process) -> None:
    response = httpx.get(gateway_without_orders.url + "/products/3")

    assert response.status_code == 200
    assert response.json()["service"] == "catalog"


def test_many_concurrent_requests_each_get_their_own_answer(gateway: Process) -> None:
    def fetch(i: int) -> bool:
        path: str = httpx.get(f"{gateway.url}/products/{i}").json()["path"]
        return path == f"/products/{i}"

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(fetch, range(200)))

    assert all(results)
