"""What the gateway costs on `GET /products/{id}`: direct vs through the gateway vs nginx, side by
side in one run, loopback only, with wrk.

    uv run python bench/gateway_overhead.py                 # real stack: catalog on PostgreSQL via PgBouncer
    uv run python bench/gateway_overhead.py --upstream stub # no database: a fixed-answer ASGI upstream

nginx is the reference line (`apt-get install nginx-light`); without it that line is skipped.
Two measurements per target, in alternating rounds so drift hits every target alike:
- throughput: wrk -c CONNECTIONS for DURATION seconds; ratio = target rps / direct rps;
- added latency: wrk -c 1 (one request at a time), p50 of the target minus p50 direct.
Writes bench/results/gateway.json (gateway_stub.json with --upstream stub)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from shop_dev.processes import (
    free_port,
    start_process,
    stop_process,
    uvicorn_command,
    wait_healthy,
)

BENCH = Path(__file__).parent
RESULTS = {
    "stack": BENCH / "results" / "gateway.json",
    "stub": BENCH / "results" / "gateway_stub.json",
}
WRK_DIR = BENCH / "wrk"


@contextmanager
def uvicorn(
    app: str, port: int, env: dict[str, str], log: Path, *extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    proc = start_process(
        uvicorn_command(port, app, *extra), log_path=log, env=env, cwd=BENCH.parent
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_process(proc)


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream catalog {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://catalog;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@contextmanager
def nginx(upstream: str, workdir: Path) -> Iterator[str | None]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        print("nginx not installed (apt-get install nginx-light): reference line skipped")
        yield None
        return
    port = free_port()
    directory = workdir / "nginx"
    directory.mkdir()
    directory.chmod(0o755)
    conf = directory / "nginx.conf"
    upstream_port = int(upstream.rsplit(":", 1)[1])
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream_port=upstream_port))
    log = directory / "nginx.out"
    proc = start_process([binary, "-c", str(conf), "-p", str(directory)], log_path=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url + "/health/live", proc, log_path=log)
        yield url
    finally:
        stop_process(proc)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (from /proc: robust to other load on the box)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wrk(
    url: str, path: str, connections: int, duration: int, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    before = {name: cpu_seconds(pid) for name, pid in (pids or {}).items()}
    env = {**os.environ, "BENCH_WRK_DIR": str(WRK_DIR), "BENCH_PATH": path, "BENCH_METHOD": "GET"}
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(WRK_DIR / "request.lua"),
    ]
    out = subprocess.run(
        [*command, url], env=env, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    non_200 = {k: v for k, v in data["statuses"].items() if k != "200"}
    if non_200 or any(data["errors"].values()):
        raise RuntimeError(f"{url}{path}: errors {data['errors']} statuses {data['statuses']}")
    result: dict[str, Any] = {
        "rps": round(data["requests"] / (data["duration_us"] / 1e6), 1),
        "p50_ms": round(data["latency_us"]["percentiles"]["50"] / 1000, 3),
        "p99_ms": round(data["latency_us"]["percentiles"]["99"] / 1000, 3),
    }
    for name, pid in (pids or {}).items():
        used = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_us_per_request"] = round(used / max(data["requests"], 1) * 1e6, 1)
    return result


def paired_latency(targets: dict[str, str], path: str, n: int) -> dict[str, dict[str, float]]:
    """One request at a time, to each target in turn (order rotated), on kept-alive connections.
    Pairing makes the load of the moment hit every target alike, which separate wrk runs do not
    on a shared box. Returns the p50 per target and the median of per-turn differences."""
    connections = {
        name: http.client.HTTPConnection(
            urlsplit(url).hostname or "", urlsplit(url).port, timeout=10
        )
        for name, url in targets.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    try:
        for i in range(n):
            turn = names[i % len(names) :] + names[: i % len(names)]
            for name in turn:
                conn = connections[name]
                start = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                samples[name].append((time.perf_counter() - start) * 1000)
                if response.status != 200:
                    raise RuntimeError(f"{name}{path}: {response.status}")
    finally:
        for conn in connections.values():
            conn.close()
    direct = samples["direct"]
    return {
        name: {
            "p50_ms": round(statistics.median(values), 3),
            "p50_added_ms": round(
                statistics.median(v - d for v, d in zip(values, direct, strict=True)), 3
            ),
        }
        for name, values in samples.items()
    }


@contextmanager
def stub_upstream(workdir: Path) -> Iterator[tuple[str, str, int]]:
    with uvicorn(
        "bench.gateway_stub:app", free_port(), {}, workdir / "stub.log", "--lifespan", "off"
    ) as (url, proc):
        wait_healthy(url + "/products/1", proc, log_path=workdir / "stub.log")
        yield url, "/products/1", proc.pid


@contextmanager
def stack_upstream(workdir: Path) -> Iterator[tuple[str, str, int]]:
    """A throwaway database, PgBouncer, users and catalog; one product created through the API."""
    from shop_common.keys import generate_private_key_pem
    from shop_dev.bootstrap import Cluster, drop_database
    from shop_dev.defaults import DEFAULT_ADMIN_URL, role_passwords
    from shop_dev.stack import Stack, StackConfig, Superuser

    key = workdir / "jwt.pem"
    key.write_bytes(generate_private_key_pem())
    key.chmod(0o600)
    cluster = Cluster(os.environ.get("SHOP_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    bouncer_dir = Path(tempfile.mkdtemp(prefix="shop-bench-pgbouncer-"))
    admin = Superuser("benchadmin", "benchadmin@example.com", secrets.token_urlsafe(16))
    config = StackConfig(
        cluster=cluster,
        database=f"shop_bench_{uuid.uuid4().hex[:8]}",
        passwords=role_passwords(),
        internal_api_token=secrets.token_urlsafe(32),
        ports={n: free_port() for n in ("pgbouncer", "users", "catalog", "orders", "gateway")},
        workdir=workdir / "stack",
        pgbouncer_dir=bouncer_dir,
        jwt_private_key_file=key,
        superuser=admin,
        environment="test",
    )
    stack = Stack(config)
    try:
        stack.prepare_database()
        stack.start_all(("users", "catalog"))
        form = {"username": admin.username, "password": admin.password}
        token = httpx.post(stack.url("users") + "/auth/token", data=form).json()["access_token"]
        product = httpx.post(
            stack.url("catalog") + "/products/",
            json={
                "name": "Bench mug",
                "sku": f"BENCH-{uuid.uuid4().hex[:8].upper()}",
                "price": "12.50",
                "stock_quantity": 100,
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        product.raise_for_status()
        catalog = stack.processes["catalog"].process
        assert catalog is not None
        yield stack.url("catalog"), f"/products/{product.json()['id']}", catalog.pid
    finally:
        stack.stop_all()
        drop_database(cluster, config.database)
        shutil.rmtree(bouncer_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", choices=("stack", "stub"), default="stack")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--paired", type=int, default=1000, help="requests per target, paired")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required (apt-get install wrk)")

    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    upstream_cm = stack_upstream if args.upstream == "stack" else stub_upstream
    with upstream_cm(workdir) as (direct, path, upstream_pid):
        gateway_env = {"ENVIRONMENT": "test", "CATALOG_URL": direct, "LOG_JSON": "true"}
        with (
            uvicorn(
                "gateway.main:create_app",
                free_port(),
                gateway_env,
                workdir / "gateway.log",
                "--factory",
                "--no-proxy-headers",
                "--http",
                "shop_common.server:GuardedHttpToolsProtocol",  # as the launcher runs it
            ) as (gateway, gateway_proc),
            nginx(direct, workdir) as reference,
        ):
            pids = {"gateway": gateway_proc.pid, "upstream": upstream_pid}
            wait_healthy(gateway + "/health/live", gateway_proc, log_path=workdir / "gateway.log")
            targets = {"direct": direct, "gateway": gateway}
            if reference is not None:
                targets["nginx"] = reference
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {
                name: {"throughput": [], "latency": []} for name in targets
            }
            for url in targets.values():  # warm-up: connection pools, caches, PgBouncer
                wrk(url, path, args.connections, 2)
            for round_no in range(args.rounds):
                for name, url in targets.items():
                    runs[name]["throughput"].append(
                        wrk(url, path, args.connections, args.duration, pids)
                    )
                    runs[name]["latency"].append(wrk(url, path, 1, max(3, args.duration // 2)))
                    print(f"round {round_no + 1} {name}: {runs[name]}", flush=True)
            paired = paired_latency(targets, path, args.paired)
            print(f"paired latency: {paired}", flush=True)

    def median(name: str, kind: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name][kind]))

    direct_rps = median("direct", "throughput", "rps")
    direct_p50 = median("direct", "latency", "p50_ms")
    summary: dict[str, Any] = {}
    for name in targets:
        rps = median(name, "throughput", "rps")
        p50 = median(name, "latency", "p50_ms")
        summary[name] = {
            "rps": rps,
            "throughput_ratio": round(rps / direct_rps, 3),
            "p50_ms_one_connection": p50,
            "p50_added_ms": round(p50 - direct_p50, 3),
            "p50_ms_loaded": median(name, "throughput", "p50_ms"),
            "p99_ms_loaded": median(name, "throughput", "p99_ms"),
            "upstream_cpu_us_per_request": median(
                name, "throughput", "upstream_cpu_us_per_request"
            ),
            "paired_p50_ms": paired[name]["p50_ms"],
            "paired_p50_added_ms": paired[name]["p50_added_ms"],
        }
        if name == "gateway":
            gateway_cpu = median(name, "throughput", "gateway_cpu_us_per_request")
            upstream_cpu = median("direct", "throughput", "upstream_cpu_us_per_request")
            summary[name]["gateway_cpu_us_per_request"] = gateway_cpu
            # When CPU is what runs out, throughput scales with the CPU a request needs in total;
            # unlike rps this barely moves with what else runs on the box.
            summary[name]["cpu_bound_ratio_estimate"] = round(
                upstream_cpu / (upstream_cpu + gateway_cpu), 3
            )
    result = {
        "what": f"GET {path} ({args.upstream} upstream)",
        "machine": f"{os.cpu_count()} cores, loopback, wrk -t1",
        "connections": args.connections,
        "duration_seconds": args.duration,
        "rounds": args.rounds,
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "targets": {"gateway": ">= 0.85x throughput, <= 1 ms p50 added"},
        "summary": summary,
        "runs": runs,
    }
    output = RESULTS[args.upstream]
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{'':8} {'rps':>9} {'ratio':>6} {'p50 (wrk -c1)':>14} {'added':>8}"
        f" {'p50 paired':>11} {'added':>8} {'cpu/req':>9}"
    )
    for name, row in summary.items():
        cpu = row.get("gateway_cpu_us_per_request")
        print(
            f"{name:8} {row['rps']:9.1f} {row['throughput_ratio']:6.3f} "
            f"{row['p50_ms_one_connection']:11.3f} ms {row['p50_added_ms']:+8.3f}"
            f" {row['paired_p50_ms']:8.3f} ms {row['paired_p50_added_ms']:+8.3f}"
            + (f" {cpu:6.0f} us" if cpu is not None else "")
        )
    print(f"written to {output.relative_to(BENCH.parent)}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
