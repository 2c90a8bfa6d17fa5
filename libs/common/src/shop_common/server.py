"""uvicorn's httptools protocol with a guard on the request head, for every process of the shop.

    uvicorn --http shop_common.server:GuardedHttpToolsProtocol ...

uvicorn's httptools protocol buffers a request line and headers of any size (llhttp has no limit,
and the URL and each header value are joined chunk by chunk: a 64 MiB header line cost seconds of
CPU before any answer) and waits for the first request head forever. This subclass:

- counts the bytes of the request head as they arrive and answers 431 problem+json, then closes,
  as soon as the head would pass `MAX_HEADER_BYTES` (request line + headers, default 16 KiB) or
  `MAX_HEADER_COUNT` fields (default 100), before the excess is handed to the parser;
- gives a request head `HEADER_READ_TIMEOUT_SECONDS` (default 10) from its first byte (or from
  the connection's opening) to be complete, then answers 408 and closes.

Everything else is uvicorn's. Cost measured in docs/PERFORMANCE.md (a counter per read, one timer
per request head)."""

from __future__ import annotations

import asyncio
import json
import os
from functools import cache
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_END_OF_HEAD = b"\r\n\r\n"


@cache
def head_limits() -> tuple[int, int, float]:
    """(max head bytes, max header fields, head read deadline), from the environment, read once."""
    return (
        int(os.environ.get("MAX_HEADER_BYTES", "16384")),
        int(os.environ.get("MAX_HEADER_COUNT", "100")),
        float(os.environ.get("HEADER_READ_TIMEOUT_SECONDS", "10")),
    )


def problem_bytes(status: int, reason: str, detail: str, extra_headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 problem+json answer that closes the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail}
    ).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
        b"content-length: %d\r\nconnection: close\r\n%s\r\n%s"
        % (status, reason.encode(), len(body), extra_headers, body)
    )


class _HeadTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head, self._max_fields, self._head_timeout = head_limits()
        self._in_head = True  # between the end of a request and the end of the next one's head
        self._head_bytes = 0
        self._tail = b""  # last bytes of the head so far, to find a CRLFCRLF split across reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head and not self._head_ends_in(data):
                self._refuse_head()
                return
            self._tail = data[-3:]
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _head_ends_in(self, data: bytes) -> bool:
        """Whether the head ends inside `data` within the limit (the rest is body or pipelined)."""
        joined = self._tail + data
        at = joined.find(_END_OF_HEAD)
        if at < 0:
            return False
        used_in_data = at + len(_END_OF_HEAD) - len(self._tail)
        return self._head_bytes - len(data) + used_in_data <= self._max_head

    def on_headers_complete(self) -> None:
        # Counted here, not per field: the byte limit already bounds what was buffered.
        if len(self.headers) > self._max_fields:
            raise _HeadTooLarge
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer is still being written; the next head's clock starts after it.
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)
            return
        self._refused = True
        self.transport.write(
            problem_bytes(
                408,
                "Request Timeout",
                f"The request head was not complete within {self._head_timeout:g} s.",
            )
        )
        self.transport.close()

    def _refuse_head(self) -> None:
        self._refused = True
        self._cancel_head_timer()
        self.logger.info("request head over the limit: 431")
        self.transport.write(
            problem_bytes(
                431,
                "Request Header Fields Too Large",
                f"The request line and headers are limited to {self._max_head} bytes "
                f"and {self._max_fields} fields.",
            )
        )
        self.transport.close()


GUARDED_HTTP = "shop_common.server:GuardedHttpToolsProtocol"


def serve(app_factory: str, *, host: str, port: int) -> None:
    """Run a service's app factory under uvicorn with the guarded protocol, as the launcher, the
    Dockerfile and the k8s manifests do (`<service> serve`)."""
    uvicorn.run(app_factory, factory=True, host=host, port=port, http=GUARDED_HTTP)
