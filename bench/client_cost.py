"""Orders' catalog client: CPU per call of httpx's transport, urllib3 (what orders uses) and the
stdlib's http.client, side by side in one run.

    uv run python bench/client_cost.py [--calls 2000] [--rounds 7]

Every order makes one call to catalog (`POST /internal/reservations?commit=true`), so its cost is
paid per order. Each client sends that request (the service token, a request id, the JSON body of
a one-item reservation) over a kept-alive connection to a stub in its own process that answers a
fixed 201 reservation, and reads the answer whole. CPU is the calling thread's user+system time
(`time.thread_time`) per call, median over rounds run in turn so drift hits every client alike.
http.client is the floor (no pool, no timeouts per phase, no error classification)."""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import urllib3

from shop_dev.stack import free_port

STUB = r"""
import asyncio, sys
BODY = (b'{"reservation_id":"3f1c2b9e-1111-4222-8333-944445555666","status":"committed",'
        b'"expires_at":"2026-12-01T20:00:00Z","items":[{"product_id":1,"name":"Product 1",'
        b'"sku":"SKU-1","quantity":1,"unit_price":"19.99"}]}')
ANSWER = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
          % len(BODY)) + BODY

class Stub(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(ANSWER)

async def main():
    server = await asyncio.get_running_loop().create_server(Stub, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

PATH = "/internal/reservations?commit=true"
BODY = {
    "reservation_id": "3f1c2b9e-1111-4222-8333-944445555666",
    "items": [{"product_id": 1, "quantity": 1}],
}
HEADERS = {"X-Service-Token": "t" * 43, "X-Request-ID": "0f5e1c2d3b4a59687766554433221100"}


def clients(port: int) -> dict[str, Callable[[], bytes]]:
    url = f"http://127.0.0.1:{port}"
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=100))
    timeout = httpx.Timeout(1.0, read=3.0).as_dict()

    def httpx_transport() -> bytes:  # what orders did before: httpx.Request → transport
        request = httpx.Request(
            "POST", url + PATH, json=BODY, headers=HEADERS, extensions={"timeout": timeout}
        )
        response = transport.handle_request(request)
        try:
            return response.read()
        finally:
            response.close()

    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1",
        port,
        maxsize=100,
        block=True,
        timeout=urllib3.Timeout(connect=1.0, read=3.0),
        retries=False,
    )

    def urllib3_pool() -> bytes:  # orders.catalog_client's exchange
        response = pool.urlopen(
            "POST",
            PATH,
            body=json.dumps(BODY).encode(),
            headers={**HEADERS, "Content-Type": "application/json"},
            retries=False,
            redirect=False,
            preload_content=False,
            pool_timeout=1,
        )
        try:
            return response.data  # Content-Length checked against the limit first in orders
        finally:
            response.release_conn()

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3.0)

    def stdlib_http_client() -> bytes:
        connection.request(
            "POST",
            PATH,
            body=json.dumps(BODY).encode(),
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        return connection.getresponse().read()

    return {
        "httpx transport": httpx_transport,
        "urllib3 pool": urllib3_pool,
        "http.client": stdlib_http_client,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-c", STUB, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stub.stdout is not None
        assert stub.stdout.readline().strip() == "ready"
        calls = clients(port)
        for call in calls.values():
            call()  # connect once
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                started = time.thread_time()
                for _ in range(args.calls):
                    call()
                cpu[name].append((time.thread_time() - started) / args.calls * 1e3)
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    baseline = statistics.median(cpu["httpx transport"])
    print(f"CPU per call, median of {args.rounds} rounds of {args.calls} (ms):")
    for name, samples in cpu.items():
        median = statistics.median(samples)
        print(f"  {name:<16} {median:.3f} ms  ({median / baseline:.2f}x httpx's transport)")


if __name__ == "__main__":
    main()
