"""The upstream client against scripted raw-socket servers: the awkward answers real upstreams
give now and then (EOF-delimited bodies, 100 Continue, dropped keep-alive connections).

This is the conformance table the gateway keeps its own client under (gateway/README.md): the
persistence rules of RFC 9112 §9 (`REUSE`), 1xx, chunked with trailers, a reset mid-body, a
stale keep-alive connection, the retry rules and the pool's bounds."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from shop_common.upstream import UpstreamBusy, UpstreamPool, UpstreamTimeout, UpstreamUnreachable

T = TypeVar("T")
# (request number on this connection, reader, writer) -> None
Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class Upstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open_now = 0
        self.most_open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            number = 0
            while not writer.is_closing():
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                number += 1
                await self.script(number, reader, writer)
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


def run(
    script: Script, scenario: Callable[[UpstreamPool, Upstream], Awaitable[T]], **pool_args: float
) -> T:
    async def main() -> T:
        upstream = Upstream(script)
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        options = {
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "keepalive_seconds": 10.0,
            "size": 10,
            "acquire_timeout": 5.0,
        }
        options.update(pool_args)
        pool = UpstreamPool(
            f"http://127.0.0.1:{port}",
            connect_timeout=options["connect_timeout"],
            read_timeout=options["read_timeout"],
            keepalive_seconds=options["keepalive_seconds"],
            size=int(options["size"]),
            acquire_timeout=options["acquire_timeout"],
        )
        try:
            return await scenario(pool, upstream)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


async def fetch(
    pool: UpstreamPool, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    response = await pool.request(method, b"/x", [], body)
    try:
        return response.status, await response.read()
    finally:
        response.release()


def test_body_delimited_by_closing_the_connection_is_read_to_the_end() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world")
        await writer.drain()
        writer.close()

    assert run(script, lambda pool, _: fetch(pool)) == (200, b"hello world")


def test_upstream_closing_mid_body_is_an_error() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    with pytest.raises(UpstreamUnreachable):
        run(script, lambda pool, _: fetch(pool))


def test_informational_answer_is_skipped() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)

    assert run(script, lambda pool, _: fetch(pool)) == (200, b"ok")


def test_chunked_answer_is_decoded() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )

    assert run(script, lambda pool, _: fetch(pool)) == (200, b"abcde")


async def _closes_on_second_request(
    number: int, _: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    if number == 1:
        writer.write(OK)  # keep-alive answer...
    else:
        writer.close()  # ...then the upstream drops the connection when it is reused


def test_get_on_a_dropped_keepalive_connection_is_retried_once() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> list[tuple[int, bytes]]:
        return [await fetch(pool), await fetch(pool)]

    assert run(_closes_on_second_request, scenario) == [(200, b"ok"), (200, b"ok")]


def test_post_on_a_dropped_keepalive_connection_is_not_retried() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> int:
        await fetch(pool, "POST", b"{}")
        with pytest.raises(UpstreamUnreachable) as caught:
            await fetch(pool, "POST", b"{}")
        assert caught.value.sent  # written to a connection that then closed: maybe acted on
        return upstream.connections

    assert run(_closes_on_second_request, scenario) == 1


def test_silent_upstream_times_out() -> None:
    async def script(_: int, __: asyncio.StreamReader, ___: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    with pytest.raises(UpstreamTimeout) as caught:
        run(script, lambda pool, _: fetch(pool), read_timeout=0.3)
    assert caught.value.sent


def test_refused_connection_is_unreachable() -> None:
    async def scenario() -> None:
        pool = UpstreamPool(
            "http://127.0.0.1:1", connect_timeout=1, read_timeout=1, keepalive_seconds=1, size=1
        )
        await fetch(pool)

    with pytest.raises(UpstreamUnreachable) as caught:
        asyncio.run(scenario())
    assert not caught.value.sent  # nothing was written: the upstream cannot have acted on it


def test_pool_size_bounds_the_connections_in_use() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[list[int], int]:
        answers = await asyncio.gather(*(fetch(pool) for _ in range(12)))
        return [status for status, _ in answers], upstream.most_open

    statuses, most_open = run(script, scenario, size=2)

    assert statuses == [200] * 12
    assert most_open == 2


def test_keepalive_connection_is_reused() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> int:
        for _ in range(5):
            await fetch(pool)
        return upstream.connections

    assert run(script, scenario) == 1


def test_answer_to_head_announces_a_length_but_has_no_body() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[int, bytes]:
        return await fetch(pool, "HEAD")

    assert run(script, scenario, read_timeout=1.0) == (200, b"")


def test_small_body_arriving_after_the_head_is_awaited() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"later")

    assert run(script, lambda pool, _: fetch(pool)) == (200, b"later")


# ---- conformance table: which answers leave a connection fit for the next request (RFC 9112 §9)
REUSE = {
    "1.1 with a length": (OK, True),
    "1.1 Connection: close": (
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        False,
    ),
    "1.0 without keep-alive": (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", False),
    "1.0 with keep-alive": (
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        True,
    ),
    "1.1 delimited by the close": (b"HTTP/1.1 200 OK\r\n\r\nok", False),
    "404 with a length": (b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nok", True),
    "500 with keep-alive": (b"HTTP/1.1 500 Error\r\ncontent-length: 2\r\n\r\nok", False),
    "503 with keep-alive": (b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\nok", False),
    "chunked with trailers": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n"
        b"1\r\no\r\n1\r\nk\r\n0\r\nx-sum: 2\r\n\r\n",
        True,
    ),
    "103 Early Hints, then 200": (
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n" + OK,
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(REUSE))
def test_connection_is_reused_only_when_the_answer_allows_it(case: str) -> None:
    answer, reusable = REUSE[case]

    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        if case == "1.1 delimited by the close":
            await writer.drain()
            writer.close()

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[list[bytes], int]:
        first, second = await fetch(pool), await fetch(pool)
        return [first[1], second[1]], upstream.connections

    bodies, connections = run(script, scenario)

    assert bodies == [b"ok", b"ok"]
    assert connections == (1 if reusable else 2)


def test_reset_mid_body_is_an_error_and_the_connection_is_not_reused() -> None:
    answered = []

    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.append(True)
        if len(answered) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN
        else:
            writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[int, bytes]:
        with pytest.raises(UpstreamUnreachable):
            await fetch(pool)
        return await fetch(pool)

    assert run(script, scenario) == (200, b"ok")


def test_post_never_meets_a_connection_the_upstream_closed_while_idle() -> None:
    """Stale keep-alive: the upstream closed the idle connection; the POST goes on a new one."""

    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # its idle timeout, much shorter than ours

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[int, int]:
        await fetch(pool)
        await asyncio.sleep(0.3)
        status, _ = await fetch(pool, "POST", b"{}")
        return status, upstream.connections

    assert run(script, scenario) == (200, 2)


def test_post_that_is_idempotent_by_key_is_retried_on_a_dropped_connection() -> None:
    async def scenario(pool: UpstreamPool, upstream: Upstream) -> tuple[int, int]:
        await fetch(pool, "POST", b"{}")
        response = await pool.request("POST", b"/x", [], b"{}", idempotent=True)
        response.release()
        return response.status, upstream.connections

    assert run(_closes_on_second_request, scenario) == (200, 2)


def test_waiting_for_a_connection_is_bounded() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)
        writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> None:
        slow = asyncio.ensure_future(fetch(pool))
        await asyncio.sleep(0.1)
        try:
            with pytest.raises(UpstreamBusy) as caught:
                await fetch(pool)
            assert not caught.value.sent
        finally:
            await slow

    run(script, scenario, size=1, acquire_timeout=0.2)


def test_a_request_that_gave_up_waiting_leaves_no_slot_taken() -> None:
    """Waiters that time out or are cancelled hold no slot afterwards: once the busy request
    ends, the pool serves its full size again at once, without waiting."""

    async def script(number: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.5 if number == 1 else 0)
        writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> list[int]:
        slow = asyncio.ensure_future(fetch(pool))
        await asyncio.sleep(0.05)
        timed_out = asyncio.ensure_future(fetch(pool))  # gives up after acquire_timeout
        cancelled = asyncio.ensure_future(fetch(pool))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(UpstreamBusy):
            await timed_out
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await slow
        async with asyncio.timeout(0.2):  # nobody waits in front: served now, in order
            return [status for status, _ in [await fetch(pool) for _ in range(3)]]

    assert run(script, scenario, size=1, acquire_timeout=0.2) == [200, 200, 200]


def test_a_freed_slot_goes_to_the_request_that_waited_longest() -> None:
    async def script(_: int, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)
        writer.write(OK)

    async def scenario(pool: UpstreamPool, upstream: Upstream) -> list[int]:
        order: list[int] = []

        async def numbered(number: int) -> None:
            await fetch(pool)
            order.append(number)

        tasks = []
        for number in range(5):
            tasks.append(asyncio.ensure_future(numbered(number)))
            await asyncio.sleep(0.001)  # arrive in this order
        await asyncio.gather(*tasks)
        return order

    assert run(script, scenario, size=1) == [0, 1, 2, 3, 4]
