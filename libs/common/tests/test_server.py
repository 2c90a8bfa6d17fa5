"""shop_common.server: the request-head guard every shop process runs under
(`uvicorn --http shop_common.server:GuardedHttpToolsProtocol`), in a real uvicorn process."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shop_dev.processes import free_port

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("guard") / "uvicorn.log"
    env = {**os.environ, "MAX_HEADER_BYTES": "8192", "MAX_HEADER_COUNT": "20"}
    env["HEADER_READ_TIMEOUT_SECONDS"] = "1"
    command = [sys.executable, "-m", "uvicorn", "guard_app:app", "--app-dir", str(HERE)]
    command += ["--http", "shop_common.server:GuardedHttpToolsProtocol", "--no-access-log"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _connect(port: int, sndbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while True:  # every answer here is small and either has a length or closes
        part = sock.recv(65536)
        if not part:
            break
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"content-length" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_an_endless_header_is_refused_before_it_is_buffered(server: int) -> None:
    sock = _connect(server, sndbuf=64 * 1024)
    sent = 0
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        while sent < 64 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(b"a" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 65536
        status, headers, body = _answer(sock)
    finally:
        sock.close()

    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert json.loads(body)["title"] == "Request Header Fields Too Large"
    assert sent < 8 * 1024 * 1024


def test_a_long_request_line_counts_too(server: int) -> None:
    sock = _connect(server)
    try:
        sock.sendall(b"GET /" + b"p" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = _answer(sock)
    finally:
        sock.close()

    assert status == 431


def test_too_many_fields_are_431(server: int) -> None:
    sock = _connect(server)
    try:
        fields = b"".join(b"X-F%d: v\r\n" % n for n in range(21))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        status, _, _ = _answer(sock)
    finally:
        sock.close()

    assert status == 431


def test_a_head_just_under_the_limit_with_a_body_in_the_same_write_passes(server: int) -> None:
    body = b"b" * 300_000
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Pad: " % len(body)
    head += b"p" * (8192 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 8192
    sock = _connect(server)
    try:
        sock.sendall(head + body)
        status, _, answer = _answer(sock)
    finally:
        sock.close()

    assert status == 200
    assert json.loads(answer)["body_bytes"] == len(body)


def test_keep_alive_requests_each_get_their_own_allowance(server: int) -> None:
    sock = _connect(server)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 6000 + b"\r\n\r\n"
    try:
        statuses = []
        for _ in range(5):  # 30 KB in all over one connection, 6 KB per head
            sock.sendall(request)
            statuses.append(_answer(sock)[0])
    finally:
        sock.close()

    assert statuses == [200] * 5


def test_a_head_that_stalls_is_408_and_closed(server: int) -> None:
    sock = _connect(server)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        status, headers, _ = _answer(sock)
        closed = sock.recv(1) == b""
    finally:
        sock.close()

    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert closed


def test_a_connection_that_sends_nothing_is_closed(server: int) -> None:
    sock = _connect(server)
    try:
        status, _, _ = _answer(sock)
    finally:
        sock.close()

    assert status == 408


class TestOneWritePerResponse:
    """The head of a response is held until its first body bytes (one write, one segment), or
    until the response ends or the connection closes without any."""

    def test_the_head_waits_for_the_body_and_comes_with_it(self, server: int) -> None:
        sock = _connect(server)
        try:
            sock.sendall(b"GET /late-body HTTP/1.1\r\nHost: x\r\n\r\n")
            early, _, _ = select.select([sock], [], [], 0.25)  # the body is sent after 0.4 s
            assert early == []  # nothing yet: the head alone was not written
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b'\r\n\r\n5\r\n{"bod\r\n' in first  # the head came with the first chunk
            answer = first
            while not answer.endswith(b"0\r\n\r\n"):
                part = sock.recv(65536)
                assert part
                answer += part
            assert answer.endswith(b'\r\n19\r\ny_bytes": 0, "fields": 1}\r\n0\r\n\r\n')
        finally:
            sock.close()

    def test_a_head_request_gets_its_head_at_once(self, server: int) -> None:
        sock = _connect(server)
        try:
            sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(2)
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert head.endswith(b"\r\n\r\n")  # no body, and the head was not held back
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # still kept alive
            assert _answer(sock)[0] == 200
        finally:
            sock.close()

    def test_100_continue_is_not_held(self, server: int) -> None:
        sock = _connect(server)
        try:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
            )
            sock.settimeout(2)
            assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"abc")
            status, _, body = _answer(sock)
            assert (status, json.loads(body)["body_bytes"]) == (200, 3)
        finally:
            sock.close()

    def test_an_app_failing_after_its_head_sends_the_head_and_closes(self, server: int) -> None:
        sock = _connect(server)
        try:
            sock.sendall(b"GET /fail-after-head HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while part := sock.recv(65536):  # until uvicorn closes the connection
                data += part
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")  # as uvicorn alone answers it
            assert data.endswith(b"\r\n\r\n")
        finally:
            sock.close()

    def test_a_websocket_upgrade_is_left_to_uvicorn(self, server: int) -> None:
        """No response cycle is made for an upgrade: uvicorn's WebSocket protocol takes over. The
        app here never accepts one, so uvicorn answers 500, as it does without the guard."""
        sock = _connect(server)
        try:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert _answer(sock)[0] == 500
        finally:
            sock.close()
