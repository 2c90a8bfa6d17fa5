"""A lean pooled HTTP/1.1 client for the upstreams: asyncio protocol + httptools (llhttp) parser.

Why not aiohttp or httpx: measured on this machine (bench/gateway_overhead.md), aiohttp's client
spends ~300 µs of CPU per proxied GET and httpx more; this one ~55 µs, because headers stay the
bytes the ASGI server handed us and nothing is re-validated or copied into multidicts.

Scope is deliberately small: plain http to a known upstream, keep-alive, streaming both ways with
flow control, connect/read timeouts, and one retry of an idempotent request whose reused
connection turned out to be closed before any byte of the answer (RFC 9112 §9.3.1).

Persistence (RFC 9112 §9): a connection goes back to the pool only after a complete answer that
allows it (HTTP/1.1 without `Connection: close`, HTTP/1.0 with keep-alive, not delimited by the
end of the connection, no read error) and whose status is below 500: an upstream that failed
often closes right after answering (uvicorn does after an unhandled exception), and the next
request, maybe a POST that must not be sent twice, must not meet that closing socket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_HIGH_WATER = 256 * 1024  # pause reading the upstream when this much body waits for the client
# A body announced at most this long is awaited with the head: one task wake-up instead of two
# (uvicorn writes the head and the body of an answer separately).
SMALL_BODY_BYTES = 64 * 1024


class UpstreamError(Exception):
    """`sent`: whether any byte of the request may have reached the upstream (False: it was never
    written, so the upstream cannot have acted on it; set by UpstreamPool.request)."""

    sent = True


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamBusy(UpstreamError):
    """No connection to the upstream became free in time (its concurrency bound is reached)."""


class _ReusedConnectionClosed(UpstreamUnreachable):
    """Closed before any response byte on a kept-alive connection: safe to retry if idempotent."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.idle_since = 0.0
        self.head_only = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.chunks: deque[bytes] = deque()
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.content_length: int | None = None  # the answer's, when it announces one
        self.framed = False  # Content-Length or Transfer-Encoding: not delimited by the close
        self.head_done = False
        self.small_body = False
        self.complete = False
        self.got_bytes = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.chunks.clear()
        self.buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._informational = False
        self._reading_paused = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamUnreachable("invalid HTTP response from upstream"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and self._eof_delimited():
            self.complete = True  # a body delimited by the end of the connection
        elif not self.complete:
            if self.got_bytes:
                self._fail(UpstreamUnreachable("upstream closed the connection mid-response"))
            else:
                self._fail(_ReusedConnectionClosed("upstream closed the connection"))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamUnreachable("upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ---- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (100 Continue...): the real answer follows
            self._informational = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        length: int | None = None
        framed = counted = False
        for name, value in self.headers:  # one pass: the first Content-Length, any framing
            lowered = name.lower()
            if lowered == b"content-length":
                if not counted:
                    length = int(value) if value.isdigit() else None
                framed = counted = True
            elif lowered == b"transfer-encoding":
                framed = True
        self.content_length = length
        self.framed = framed
        # (an answer to HEAD announces a length it never sends)
        self.small_body = not self.head_only and length is not None and length <= SMALL_BODY_BYTES
        if not self.small_body:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        if not self.small_body:
            self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._wake()

    # ---- helpers
    def ready(self) -> bool:
        """The head is in, and so is the whole body when it is small."""
        return self.head_done and (self.complete or not self.small_body)

    def _eof_delimited(self) -> bool:
        return not self.framed

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout_seconds: float) -> None:
        """Until something happens (head, body, end, error); UpstreamTimeout after `timeout_seconds`."""
        if self.error is not None:
            raise self.error
        waiter = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout_seconds, self._expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(UpstreamTimeout("upstream did not answer in time"))

    def pop_chunk(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered < _HIGH_WATER // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def write_nowait(self, data: bytes) -> asyncio.Future[None] | None:
        """Hand `data` to the socket; a future to await when the socket buffer is full."""
        if self.closed or self.transport is None:
            raise self.error or UpstreamUnreachable("upstream closed the connection")
        self.transport.write(data)
        if self._write_paused:
            self._drain = self.loop.create_future()
            return self._drain
        return None

    async def write(self, data: bytes) -> None:
        drain = self.write_nowait(data)
        if drain is not None:
            await drain

    def take_body(self) -> bytes:
        """Everything buffered of the body, at once (the answer is complete)."""
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._reading_paused and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def begin(self, method: str) -> None:
        self._reset()
        self.head_only = method == "HEAD"

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamResponse:
    """An upstream answer whose body is read on demand; `release()` returns the connection."""

    def __init__(
        self, pool: UpstreamPool, conn: _Connection, method: str, read_timeout: float
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._read_timeout = read_timeout
        self._head_only = method == "HEAD"
        self.status = conn.status
        self.headers: Headers = conn.headers
        self._released = False

    @property
    def content_length(self) -> int | None:
        return self._conn.content_length

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if self._head_only:
            return
        while True:
            while conn.chunks:
                yield conn.pop_chunk()
            if conn.complete:
                return
            await conn.wait(self._read_timeout)

    async def read(self) -> bytes:
        body = self.body_if_complete()
        if body is not None:
            return body
        return b"".join([chunk async for chunk in self.chunks()])

    def body_if_complete(self) -> bytes | None:
        """The whole body when all of it is already here (a small answer is awaited with its
        head), without a task switch; None when some of it is still to come."""
        if self._head_only:
            return b""
        conn = self._conn
        if conn.complete:
            return conn.take_body()
        return None

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        reusable = (
            conn.complete
            and conn.keep_alive
            and self.status < 500
            and not conn.closed
            and not conn.chunks
            and not self._head_only
        )
        self._pool._give_back(conn, reusable)


class UpstreamPool:
    """Keep-alive connections to one upstream, at most `size` in use at once."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_seconds: float,
        size: int,
        acquire_timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream URL must be http://host[:port][/prefix], got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/").encode()
        self.host_header = parts.netloc.encode()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self.acquire_timeout = acquire_timeout
        self._idle: list[_Connection] = []
        # At most `size` requests in flight: a counter, and the requests waiting for a slot in
        # arrival order (a freed slot is handed to the first of them).
        self._size = size
        self._in_use = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect: {exc.strerror or exc}") from exc
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_seconds:
                return conn
            conn.close()
        return None

    def _give_back(self, conn: _Connection, reusable: bool) -> None:
        if reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        self._release_slot()

    async def _acquire_slot(self) -> None:
        """A slot for one request; UpstreamBusy when none is free within `acquire_timeout`."""
        if self._in_use < self._size and not self._waiting:
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.acquire_timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed over just as we gave up: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # (a release may have dropped it already)
                    self._waiting.remove(waiter)  # only live waiters stay queued
            if isinstance(exc, TimeoutError):
                raise UpstreamBusy("no upstream connection free in time") from exc
            raise

    def _release_slot(self) -> None:
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it, still counted in use
                return
        self._in_use -= 1

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        content_length: int | None = None,
        read_timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the status line and headers. The caller must
        `release()` the response. `target` is the raw path and query; `headers` exclude Host
        and framing (Content-Length / Transfer-Encoding), which are set here. `idempotent`
        overrides the method's own semantics (a POST with an Idempotency-Key the upstream honours
        may be sent again). UpstreamBusy when no connection is free within `acquire_timeout`."""
        timeout = read_timeout or self.read_timeout
        head = [b"%s %s%s HTTP/1.1\r\n" % (method.encode(), self.prefix, target)]
        has_host = False
        for name, value in headers:
            if not has_host and name.lower() == b"host":
                has_host = True
            head += (name, b": ", value, b"\r\n")
        if not has_host:
            head.insert(1, b"host: %s\r\n" % self.host_header)
        if isinstance(body, bytes):
            head.append(b"content-length: %d\r\n" % len(body))
        elif body is not None:
            if content_length is not None:
                head.append(b"content-length: %d\r\n" % content_length)
            else:
                head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        preamble = b"".join(head)
        replayable = not (body is not None and not isinstance(body, bytes))
        retryable = replayable and (method in IDEMPOTENT if idempotent is None else idempotent)
        if self._in_use < self._size and not self._waiting:
            self._in_use += 1  # a slot is free: taken without a task switch
        else:
            try:
                await self._acquire_slot()  # all in use: wait, but not forever
            except UpstreamError as exc:
                exc.sent = False
                raise
        written = False  # by any attempt: after that, the upstream may have acted on it
        try:
            conn = self._take_idle()
            reused = conn is not None
            for attempt in (1, 2):
                if conn is None:
                    conn = await self._connect()
                conn.begin(method)
                written = True
                try:
                    if body is None or isinstance(body, bytes):
                        drain = conn.write_nowait(preamble + body if body else preamble)
                        if drain is not None:
                            await drain
                    else:
                        await self._send(conn, preamble, body, chunked=content_length is None)
                    while not conn.ready():
                        await conn.wait(timeout)
                except _ReusedConnectionClosed:
                    conn.close()
                    if reused and attempt == 1 and retryable:
                        conn, reused = None, False
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                return UpstreamResponse(self, conn, method, timeout)
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException as exc:
            self._release_slot()
            if isinstance(exc, UpstreamError):
                exc.sent = written
            raise

    @staticmethod
    async def _send(
        conn: _Connection, preamble: bytes, body: bytes | AsyncIterator[bytes] | None, chunked: bool
    ) -> None:
        if body is None:
            await conn.write(preamble)
        elif isinstance(body, bytes):
            await conn.write(preamble + body)
        else:
            await conn.write(preamble)
            async for chunk in body:
                if not chunk:
                    continue
                await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                await conn.write(b"0\r\n\r\n")

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
