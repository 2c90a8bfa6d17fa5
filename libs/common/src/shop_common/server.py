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
per request head).

It also holds the one way every shop process is started, `serve()` (also `python -m
shop_common.server`): uvicorn with this protocol and `WEB_CONCURRENCY` worker processes. With more
than one, uvicorn's supervisor binds the port and runs the workers; each worker dies with the
supervisor (PR_SET_PDEATHSIG), and Prometheus runs in multiprocess mode in a fresh private
directory per start, so /metrics adds up every worker's numbers (docs/CONFIGURATION.md)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httptools
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess

from shop_common.settings import MAX_WEB_CONCURRENCY

if TYPE_CHECKING:  # imported where used: prometheus_client must not be loaded before the
    # supervisor sets PROMETHEUS_MULTIPROC_DIR for its workers
    from prometheus_client import CollectorRegistry

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


class _OneWriteTransport:
    """The transport a request's cycle writes its response to. uvicorn writes the status line and
    headers, then the body: two writes, each a syscall and a TCP segment of its own (the socket
    has TCP_NODELAY), and the reader (the gateway, another service) wakes up twice. This holds the
    head and sends it with the first body bytes, or when the response ends or the connection
    closes without any (HEAD, an app that fails after starting its answer). Everything else is the
    connection's transport."""

    __slots__ = ("_cycle", "_head", "_head_seen", "_responded", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False
        self._responded = cycle.on_response
        cycle.on_response = self._on_response  # called once the response is complete

    def _on_response(self) -> None:
        self.flush()  # a response without body bytes (HEAD)
        self._responded()

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data = self._head + data
            self._head = None
        elif not self._head_seen and self._cycle.response_started:
            # The first write once the response has started is its head (a "100 Continue"
            # comes before the start and passes straight through).
            self._head = data
            self._head_seen = True
            return
        self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request (not a WebSocket upgrade: no cycle for it)
            cycle: Any = self.cycle
            cycle.transport = _OneWriteTransport(self.transport, cycle)

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
WORKER_APP = "shop_common.server:worker_app"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
# Handed from the supervisor to its workers (spawned interpreters inherit the environment).
_APP_FACTORY = "SHOP_WORKER_APP_FACTORY"
_SUPERVISOR_PID = "SHOP_WORKER_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


_heap_settled = False


def settle_heap() -> None:
    """Once per process, at the end of its app's startup (the services' and the gateway's
    lifespan): collect startup's garbage, then move every object still alive (modules, the app,
    its routes and models, SQLAlchemy's tables) into the collector's permanent generation
    (`gc.freeze`). Full collections then walk only what requests left behind. In an orders
    worker under load one took 160-180 ms with the whole heap to walk, and every request in the
    process waited behind it; frozen, 4-13 ms (docs/PERFORMANCE.md). Later calls (a test process
    builds many apps) do nothing: what the first app froze stays, the rest is collected as
    before."""
    global _heap_settled
    if _heap_settled:
        return
    _heap_settled = True
    gc.collect()
    gc.freeze()


def web_concurrency(environ: Mapping[str, str] | None = None) -> int:
    """Worker processes from WEB_CONCURRENCY (unset: 1); anything but 1..MAX_WEB_CONCURRENCY stops
    the start with a message, before a port is bound. The same bounds as the settings field."""
    raw = (os.environ if environ is None else environ).get("WEB_CONCURRENCY", "").strip()
    try:
        workers = int(raw or "1")
    except ValueError:
        workers = 0
    if not 1 <= workers <= MAX_WEB_CONCURRENCY:
        raise SystemExit(
            f"WEB_CONCURRENCY={raw!r}: expected a whole number of worker processes "
            f"from 1 to {MAX_WEB_CONCURRENCY}"
        )
    return workers


def serve(
    app_factory: str,
    *,
    host: str,
    port: int,
    proxy_headers: bool = True,
    graceful_shutdown_seconds: int | None = None,
    workers: int | None = None,
) -> None:
    """Run a service's app factory under uvicorn with the guarded protocol and `workers` processes
    (None: WEB_CONCURRENCY), as the launcher, the Dockerfile and `<service> serve` do. Returns when
    stopped; exits with uvicorn's STARTUP_FAILURE (3) when the app (or a worker's) fails to start."""
    workers = web_concurrency() if workers is None else workers
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": GUARDED_HTTP,
        "factory": True,
        "access_log": False,  # each service writes its own access line, with the request id
        "proxy_headers": proxy_headers,
        "timeout_graceful_shutdown": graceful_shutdown_seconds,
    }
    if workers == 1:
        # One process: the default in-memory registry (and its process_* metrics), no files.
        os.environ.pop(MULTIPROC_DIR, None)
        uvicorn.run(app_factory, **options)
        return
    metrics_dir = _fresh_metrics_dir()
    os.environ.update(
        {MULTIPROC_DIR: metrics_dir, _APP_FACTORY: app_factory, _SUPERVISOR_PID: str(os.getpid())}
    )
    try:
        config = uvicorn.Config(WORKER_APP, workers=workers, **options)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()  # until SIGINT/SIGTERM, or a worker that fails to start
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


def _fresh_metrics_dir() -> str:
    """A new private directory (mkdtemp: mode 0700) for this start's metrics files, inside
    PROMETHEUS_MULTIPROC_DIR when the operator names one, else in the temporary directory: files
    of an earlier run would be counted again. Directories a killed supervisor left behind (its pid
    is gone, or is ours: a restarted container's PID 1) are removed first."""
    base = Path(os.environ.get(MULTIPROC_DIR) or tempfile.gettempdir())
    for stale in base.glob("shop-metrics-*-*"):
        owner = stale.name.split("-")[2]
        if owner.isdigit() and (int(owner) == os.getpid() or not _running(int(owner))):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"shop-metrics-{os.getpid()}-", dir=base)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def worker_app() -> Any:
    """The factory each worker process runs (WEB_CONCURRENCY > 1): ties the worker's life to the
    supervisor's, then builds the service's app from its own factory."""
    supervisor = int(os.environ[_SUPERVISOR_PID])
    # SIGKILL when the supervisor dies, however it dies: no worker outlives it holding the port.
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor:  # it died before prctl took effect
        raise SystemExit(STARTUP_FAILURE)
    atexit.register(_mark_process_dead, os.getpid())
    try:
        return import_from_string(os.environ[_APP_FACTORY])()
    except Exception:
        # uvicorn's supervisor replaces a worker that dies of anything but STARTUP_FAILURE, so a
        # broken app would be rebuilt forever; as in one process, the service stops instead.
        logging.getLogger("uvicorn.error").exception("the app factory failed")
        raise SystemExit(STARTUP_FAILURE) from None


def metrics_registry() -> CollectorRegistry:
    """What /metrics exposes. One process: its own registry. Under PROMETHEUS_MULTIPROC_DIR (set by
    `serve` for more than one worker): every worker's values, dead ones included, read from their
    files and added up, so each scrape shows the whole service whichever worker answers it. The
    default process_* and python_* collectors describe one process and are not in it."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if not os.environ.get(MULTIPROC_DIR):  # the same test prometheus_client makes at import
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def _mark_process_dead(pid: int) -> None:
    """Drop this worker's live-gauge files (prometheus_client's bookkeeping for a dead process;
    counters and histograms stay, so totals never go down). Nothing to drop today: the shop has
    no live gauge."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def main(argv: list[str] | None = None) -> None:
    """`python -m shop_common.server [APP] [options]`: the command of the images and the launcher.
    Defaults come from the UVICORN_* variables the Dockerfile sets (the names uvicorn's own CLI
    reads, for the options this command has); WEB_CONCURRENCY gives the worker processes."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m shop_common.server")
    parser.add_argument("app", nargs="?", default=env.get("UVICORN_APP"), help="module:factory")
    parser.add_argument("--host", default=env.get("UVICORN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("UVICORN_PORT", "8000")))
    parser.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=env.get("UVICORN_PROXY_HEADERS", "true").lower() in {"1", "true", "yes"},
        help="believe X-Forwarded-For/-Proto from FORWARDED_ALLOW_IPS (off for the gateway)",
    )
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    if not args.app:
        parser.error("name the app factory (module:function) or set UVICORN_APP")
    serve(
        args.app,
        host=args.host,
        port=args.port,
        proxy_headers=args.proxy_headers,
        graceful_shutdown_seconds=args.timeout_graceful_shutdown,
    )


if __name__ == "__main__":
    main()
