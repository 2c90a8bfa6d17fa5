"""The gateway's upstream client against maintained ones: CPU per proxied GET in the client process.

    uv run python bench/client_compare.py [--requests 3000] [--rounds 3]

Everything but the client is the same for the three (the gateway's routing, header rewriting and
ASGI work do not change with the client), so the client alone is measured: one process, uvloop
like the gateway under uvicorn, `--concurrency` requests in flight, each a GET with the ~10
headers the gateway forwards, its answer read whole and the connection returned to the pool.
The upstream is the gateway tests' stub (its own uvicorn process) answering `/products/_slow`
after `seconds`: 4.5 ms (catalog's `GET /products/{id}` today, bench/gateway_overhead.md) and
1.5 ms (three times faster). CPU is this process's user+system time per request
(`time.process_time`), median over rounds run in turn so drift hits every client alike.
Writes bench/results/client_compare.json.

httpcore 1.0 tries `import sniffio` on every lock it creates; sniffio is not installed here
(anyio 4 no longer needs it), and a failing import searches sys.path each time (~3-5 ms per
request). `sys.modules["sniffio"] = None` makes that import fail at once, as it would be
configured if we adopted httpcore: the figures are httpcore's own cost."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpcore
import httpx
import uvloop

from shop_common.upstream import UpstreamPool
from shop_dev.processes import free_port

sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

BENCH = Path(__file__).parent
ROOT = BENCH.parent
HEADERS = [
    (b"host", b"shop.example"),
    (b"user-agent", b"wrk"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip"),
    (b"authorization", b"Bearer " + b"t" * 300),
    (b"x-forwarded-for", b"127.0.0.1"),
    (b"x-forwarded-proto", b"http"),
    (b"x-forwarded-host", b"shop.example"),
    (b"x-request-id", b"0123456789abcdef0123456789abcdef"),
]
Fetch = Callable[[str], Awaitable[int]]


def start_stub(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "upstream_app:create_stub"]
    command += ["--app-dir", str(ROOT / "gateway" / "tests"), "--no-access-log"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "STUB_NAME": "catalog"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("stub did not start")


async def own(base: str, run: Callable[[Fetch], Awaitable[float]]) -> float:
    pool = UpstreamPool(base, connect_timeout=2, read_timeout=30, keepalive_seconds=4, size=100)

    async def fetch(target: str) -> int:
        response = await pool.request("GET", target.encode(), HEADERS)
        try:
            await response.read()
        finally:
            response.release()
        return response.status

    try:
        return await run(fetch)
    finally:
        pool.close()


async def with_httpcore(base: str, run: Callable[[Fetch], Awaitable[float]]) -> float:
    async with httpcore.AsyncConnectionPool(
        max_connections=100, max_keepalive_connections=100, keepalive_expiry=4
    ) as pool:

        async def fetch(target: str) -> int:
            response = await pool.request("GET", base + target, headers=HEADERS)
            return response.status

        return await run(fetch)


async def with_aiohttp(base: str, run: Callable[[Fetch], Awaitable[float]]) -> float:
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=4)
    headers = {k.decode(): v.decode() for k, v in HEADERS if k != b"host"}
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def fetch(target: str) -> int:
            async with session.get(
                base + target, headers=headers, skip_auto_headers=("Accept-Encoding",)
            ) as response:
                await response.read()
                return response.status

        return await run(fetch)


CLIENTS = {"own (httptools)": own, "httpcore": with_httpcore, "aiohttp": with_aiohttp}


def runner(target: str, requests: int, concurrency: int) -> Callable[[Fetch], Awaitable[float]]:
    async def run(fetch: Fetch) -> float:
        for _ in range(concurrency * 2):  # warm the pool
            assert await fetch(target) == 200
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                status = await fetch(target)
                assert status == 200, status

        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.process_time() - cpu) / requests * 1e6

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    stub = start_stub(port)
    base = f"http://127.0.0.1:{port}"
    speeds = {"today (4.5 ms)": 0.0045, "3x faster (1.5 ms)": 0.0015}
    samples: dict[str, dict[str, list[float]]] = {s: {c: [] for c in CLIENTS} for s in speeds}
    try:
        for _ in range(args.rounds):
            for speed, seconds in speeds.items():
                target = f"/products/_slow?seconds={seconds}"
                for name, client in CLIENTS.items():
                    run = runner(target, args.requests, args.concurrency)
                    cpu_us = uvloop.run(client(base, run))
                    samples[speed][name].append(cpu_us)
                    print(f"{speed:20} {name:16} {cpu_us:7.1f} µs CPU/request", flush=True)
    finally:
        stub.terminate()
        stub.wait(10)
    result: dict[str, Any] = {
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "loadavg": os.getloadavg()[0],
        "cpu_us_per_request_median": {
            speed: {name: round(statistics.median(v), 1) for name, v in by.items()}
            for speed, by in samples.items()
        },
        "samples": samples,
    }
    for speed, by in result["cpu_us_per_request_median"].items():
        own_us = by["own (httptools)"]
        extra = {
            name: round(us - own_us, 1) for name, us in by.items() if name != "own (httptools)"
        }
        result.setdefault("extra_us_vs_own", {})[speed] = extra
    out = BENCH / "results" / "client_compare.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cpu_us_per_request_median"], indent=2))
    print(json.dumps(result["extra_us_vs_own"], indent=2))


if __name__ == "__main__":
    main()
