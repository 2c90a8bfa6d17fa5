"""Hostile clients beside normal traffic, through the gateway (issue 12).

    uv run python bench/hostile.py [--duration 15] [--slow-sockets 120]

Starts the whole stack (throwaway database, PgBouncer, users, catalog, orders, gateway; the
same harness as `make bench`), creates a few products, then measures normal traffic, wrk
`-t1 -c16` on `GET /products/{id}` through the gateway, twice in turn:

- quiet: nobody else;
- hostile: at the same time
  - `--slow-sockets` connections sending `POST /products/` with a chunked body, one byte per
    socket every 2 s (reconnecting when the gateway ends one with 408);
  - a connection sending a 64 MiB header line (the 431 should come at 16 KiB), a new one every
    second;
  - bursts of malformed bodies: every 3 s, 4 clients each post 6 times in a row deeply
    nested JSON (100,000 levels) to `POST /orders/` with a valid token.

Targets: normal traffic keeps >= 0.8x its quiet throughput and a p99 <= 3x its quiet p99, with
no 502 caused by someone else's request. Also reported: the gateway's CPU and memory, what the
hostile clients got back. Loopback only, bounded in time and sockets.
Writes bench/results/hostile.json."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from shopbench.environment import LOGIN_LIMITS_OFF

from shop_common.keys import generate_private_key_pem
from shop_dev.bootstrap import Cluster, drop_database
from shop_dev.defaults import DEFAULT_ADMIN_URL
from shop_dev.stack import Stack, Superuser, throwaway_config

BENCH = Path(__file__).parent
WRK_DIR = BENCH / "wrk"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def wrk(url: str, ids: list[int], duration: float, gateway_pid: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_WRK_DIR": str(WRK_DIR),
        "BENCH_PATH": "/products/{id}",
        "BENCH_IDS": ",".join(map(str, ids)),
        "BENCH_METHOD": "GET",
    }
    cpu = cpu_seconds(gateway_pid)
    command = ["wrk", "-t1", "-c16", f"-d{duration:g}s", "--timeout", "10s"]
    command += ["-s", str(WRK_DIR / "request.lua"), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    return {
        "rps": round(data["requests"] / (data["duration_us"] / 1e6), 1),
        "p50_ms": round(data["latency_us"]["percentiles"]["50"] / 1000, 2),
        "p99_ms": round(data["latency_us"]["percentiles"]["99"] / 1000, 2),
        "statuses": data["statuses"],
        "socket_errors": data["errors"],
        "gateway_cpu_us_per_request": round(
            (cpu_seconds(gateway_pid) - cpu) / max(data["requests"], 1) * 1e6, 1
        ),
    }


@contextmanager
def running_stack() -> Iterator[Stack]:
    """The whole stack on a throwaway database (as `make bench`, without its extra catalog)."""
    cluster = Cluster(os.environ.get("SHOP_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    workdir = Path(tempfile.mkdtemp(prefix="shop-bench-hostile-"))
    key_file = workdir / "jwt-ed25519.pem"
    key_file.write_bytes(generate_private_key_pem())
    key_file.chmod(0o600)
    config = throwaway_config(
        cluster,
        database_prefix="shop_bench",
        workdir=workdir / "logs",
        jwt_private_key_file=key_file,
        superuser=Superuser(
            f"bench_admin_{secrets.token_hex(4)}",
            "bench-admin@example.com",
            secrets.token_urlsafe(24),
        ),
        extra_env={name: dict(LOGIN_LIMITS_OFF.get(name, {})) for name in ("users", "gateway")},
    )
    stack = Stack(config)
    try:
        stack.prepare_database()
        stack.start_all(timeout=180)
        yield stack
    finally:
        stack.stop_all()
        drop_database(cluster, config.database)
        shutil.rmtree(config.pgbouncer_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


class Hostiles:
    """The attackers, each a thread with its own sockets; `stop()` ends them all."""

    def __init__(self, url: str, token: str, slow_sockets: int) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.token = token
        self.slow_sockets = slow_sockets
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.big_header_bytes_sent: list[int] = []
        self.threads = [
            threading.Thread(target=self._slow_bodies, daemon=True),
            threading.Thread(target=self._big_headers, daemon=True),
            *(threading.Thread(target=self._malformed, daemon=True) for _ in range(4)),
        ]

    def count(self, what: str) -> None:
        with self.lock:
            self.outcomes[what] += 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)

    def _open_slow(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.sendall(
            b"POST /products/ HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        return sock

    def _slow_bodies(self) -> None:
        sockets = [self._open_slow() for _ in range(self.slow_sockets)]
        while not self.stopping.wait(2):
            for index, sock in enumerate(sockets):
                try:
                    sock.sendall(b"1\r\n \r\n")
                    continue
                except OSError:
                    pass
                self._closed_slow(sock)
                sockets[index] = self._open_slow()
        for sock in sockets:
            sock.close()

    def _closed_slow(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(1)
            status = sock.recv(64).split(b" ", 2)[1].decode()
        except (OSError, IndexError):
            status = "closed"
        self.count(f"slow body: {status}")
        sock.close()

    def _big_headers(self) -> None:
        block = b"a" * 65536
        while not self.stopping.is_set():
            sock = socket.create_connection(self.address, timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            sent = 0
            try:
                sock.sendall(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\nX-Big: ")
                while sent < 64 * 1024 * 1024 and not self.stopping.is_set():
                    sock.sendall(block)
                    sent += len(block)
            except OSError:
                pass
            try:
                status = sock.recv(64).split(b" ", 2)[1].decode()
            except (OSError, IndexError):
                status = "no answer"
            self.count(f"64 MiB header: {status}")
            self.big_header_bytes_sent.append(sent)
            sock.close()
            self.stopping.wait(1)

    def _malformed(self) -> None:
        body = b"[" * 100_000 + b"]" * 100_000
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        with httpx.Client(base_url=f"http://{self.address[0]}:{self.address[1]}", timeout=10) as c:
            while not self.stopping.is_set():
                for _ in range(6):
                    try:
                        answer = c.post("/orders/", content=body, headers=headers)
                        status = str(answer.status_code)
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    self.count(f"nested JSON: {status}")
                self.stopping.wait(3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--slow-sockets", type=int, default=120)
    args = parser.parse_args()
    with running_stack() as stack:
        gateway = stack.url("gateway")
        admin = stack.config.superuser
        form = {"username": admin.username, "password": admin.password}
        token = httpx.post(f"{gateway}/auth/token", data=form, timeout=30).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        for n in range(8):
            product = {
                "name": f"Hostile bench {n}",
                "sku": f"HB-{uuid.uuid4().hex[:10].upper()}",
                "price": "9.90",
                "stock_quantity": 1000,
            }
            created = httpx.post(f"{gateway}/products/", json=product, headers=auth, timeout=30)
            created.raise_for_status()
            ids.append(created.json()["id"])
        process = stack.processes["gateway"].process
        assert process is not None
        pid = process.pid
        wrk(gateway, ids, 3, pid)  # warm-up
        rss_before = rss_mib(pid)
        quiet = wrk(gateway, ids, args.duration, pid)
        print("quiet:", quiet, flush=True)
        hostiles = Hostiles(gateway, token, args.slow_sockets)
        hostiles.start()
        time.sleep(3)  # every attacker connected and busy
        try:
            hostile = wrk(gateway, ids, args.duration, pid)
            rss_during = rss_mib(pid)
        finally:
            hostiles.stop()
        print("hostile:", hostile, flush=True)
        sent = hostiles.big_header_bytes_sent
        result: dict[str, Any] = {
            "loadavg_1m": os.getloadavg()[0],
            "duration_s": args.duration,
            "slow_body_sockets": args.slow_sockets,
            "quiet": quiet,
            "hostile": hostile,
            "throughput_ratio": round(hostile["rps"] / quiet["rps"], 2),
            "p99_ratio": round(hostile["p99_ms"] / quiet["p99_ms"], 2),
            "normal_502": hostile["statuses"].get("502", 0),
            "gateway_rss_mib": {"before": rss_before, "during": rss_during},
            "hostile_outcomes": dict(sorted(hostiles.outcomes.items())),
            "big_header_max_bytes_sent_before_refusal": max(sent) if sent else None,
        }
    out = BENCH / "results" / "hostile.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
