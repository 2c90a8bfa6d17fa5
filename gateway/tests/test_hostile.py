"""One hostile client or one failing upstream must not hurt anyone else (issue 12).

Raw sockets against a real gateway process in front of real stub upstreams (`upstream_app.py`):
an upstream that answers 500 and then closes, slow request bodies, a request head that never
ends, redirects built from an untrusted Host."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from conftest import GatewayFactory, Process


def _connect(process: Process, sndbuf: int | None = None) -> socket.socket:
    parts = urlsplit(process.url)
    sock = socket.socket()
    if sndbuf is not None:  # keep the kernel from absorbing megabytes on our side
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(10)
    sock.connect((parts.hostname or "", parts.port or 80))
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer; the body up to Content-Length or the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), headers, body


# ---- 1. an upstream 500 that closes its connection poisons nobody's next request


def test_post_after_an_upstream_500_that_closes_is_answered_not_502(gateway: Process) -> None:
    """The upstream answers 500 (keep-alive) and closes a moment later, as uvicorn does after an
    unhandled exception; the next POST must not be sent on that connection."""
    with (
        httpx.Client(base_url=gateway.url, timeout=10) as user_a,
        httpx.Client(base_url=gateway.url, timeout=10) as user_b,
    ):
        crashed, valid = [], []
        for _ in range(5):
            crashed.append(user_a.post("/orders/_crash", content=b'{"a":' * 50).status_code)
            order = user_b.post("/orders/", json={"items": [{"product_id": 1, "quantity": 1}]})
            valid.append(order.status_code)

    assert crashed == [500] * 5
    assert valid == [200] * 5


# ---- 2. slow request bodies hold only their own socket


def _slow_body_sockets(gateway: Process, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = _connect(gateway)
        sock.sendall(
            b"POST /products/ HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        sockets.append(sock)
    return sockets


def test_slow_bodies_do_not_take_the_upstream_connections(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(upstream_pool_size="4", body_idle_timeout_seconds="60")
    slow = _slow_body_sockets(gateway, 12)  # three times the pool
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            answers = [client.get(f"/products/{n}").status_code for n in range(10)]
    finally:
        for sock in slow:
            sock.close()

    assert answers == [200] * 10


def test_a_body_that_stops_arriving_is_408(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(body_idle_timeout_seconds="1")
    sock = _connect(gateway)
    try:
        sock.sendall(
            b"POST /orders/ HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"items"'
        )
        status, headers, body = _read_answer(sock)
        after = sock.recv(1)
    finally:
        sock.close()

    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 408
    assert headers["connection"] == "close"
    assert after == b""  # and the connection is closed


def test_waiting_for_a_busy_upstream_is_503_with_retry_after(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(upstream_pool_size="2", upstream_acquire_timeout_seconds="0.5")
    slow = [
        threading.Thread(
            target=httpx.get, args=(f"{gateway.url}/products/_slow?seconds=4",), daemon=True
        )
        for _ in range(2)
    ]
    for thread in slow:
        thread.start()
    time.sleep(1)  # both slow requests hold catalog's two connections
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        busy = client.get("/products/1")
        other_upstream = client.get("/users/1")
    for thread in slow:
        thread.join(10)

    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.headers["content-type"] == "application/problem+json"
    assert busy.json()["upstream"] == "catalog"
    assert other_upstream.status_code == 200  # one saturated upstream does not starve the others


# ---- 3. an oversized or endless request head is refused before it is buffered


def test_endless_header_line_is_431_before_it_is_all_sent(gateway: Process) -> None:
    sock = _connect(gateway, sndbuf=64 * 1024)
    sent = 0
    block = b"a" * 65536
    try:
        sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\nX-Big: ")
        while sent < 64 * 1024 * 1024:  # the 64 MiB header line of the report, never finished
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there
            try:
                sock.sendall(block)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        status, headers, body = _read_answer(sock)
    finally:
        sock.close()

    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 431
    assert sent < 8 * 1024 * 1024  # refused long before the end (kernel buffers included)


def test_too_many_header_fields_are_431(gateway: Process) -> None:
    sock = _connect(gateway)
    try:
        fields = b"".join(b"X-F%d: v\r\n" % n for n in range(150))
        sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\n" + fields + b"\r\n")
        status, headers, _ = _read_answer(sock)
    finally:
        sock.close()

    assert status == 431
    assert headers["content-type"] == "application/problem+json"


def test_a_request_head_that_never_ends_is_408(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(header_read_timeout_seconds="1")
    sock = _connect(gateway)
    try:
        sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
        status, headers, _ = _read_answer(sock)
    finally:
        sock.close()

    assert status == 408
    assert headers["content-type"] == "application/problem+json"


def test_large_head_and_body_in_one_write_are_not_refused(gateway: Process) -> None:
    """The head limit counts the head only: 15 KiB of headers and 600 KiB of body together."""
    sock = _connect(gateway)
    body = b'{"x": "' + b"y" * 600_000 + b'"}'
    try:
        sock.sendall(
            b"POST /products/ HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
            b"X-Pad: " + b"p" * 15_000 + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        status, _, answer = _read_answer(sock)
    finally:
        sock.close()

    assert status == 200
    assert json.loads(answer)["body_bytes"] == len(body)


# ---- 4. redirects point at the gateway, never at an upstream or a client-chosen host


def test_redirect_never_reflects_an_untrusted_host(gateway: Process) -> None:
    status, headers, _ = gateway.raw("GET", "/products", headers={"Host": "evil.com"})

    assert status == 307
    assert headers["location"] == "/products/"


def test_redirect_over_http_1_0_without_host_never_names_the_upstream(gateway: Process) -> None:
    sock = _connect(gateway)
    try:
        sock.sendall(b"GET /orders HTTP/1.0\r\n\r\n")
        status, headers, _ = _read_answer(sock)
    finally:
        sock.close()

    assert status == 307
    assert headers["location"] == "/orders/"
