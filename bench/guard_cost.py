"""What the request-head guard costs: uvicorn's httptools protocol vs
`shop_common.server.GuardedHttpToolsProtocol`, same tiny ASGI app, CPU per request.

    uv run python bench/guard_cost.py [--rounds 3] [--duration 5]

Two uvicorn processes (loopback, free ports) serve `libs/common/tests/guard_app.py`; wrk
`-t1 -c16` drives each in turn for `--duration` seconds per round, with ~10 headers per request
(a realistic head); the server's user+system CPU comes from /proc. The app does almost nothing,
so the difference is the guard's whole cost relative to the smallest possible request.
Writes bench/results/guard_cost.json."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shop_dev.processes import free_port

BENCH = Path(__file__).parent
APP_DIR = BENCH.parent / "libs" / "common" / "tests"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROTOCOLS = {
    "httptools": "httptools",
    "guarded": "shop_common.server:GuardedHttpToolsProtocol",
}
LUA = """
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. string.rep("t", 300)
wrk.headers["User-Agent"] = "wrk"
wrk.headers["X-Request-ID"] = "0123456789abcdef0123456789abcdef"
wrk.headers["X-Forwarded-For"] = "127.0.0.1"
wrk.headers["X-Forwarded-Proto"] = "http"
wrk.headers["Accept-Encoding"] = "gzip"
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def serve(protocol: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "guard_app:app", "--app-dir", str(APP_DIR)]
    command += ["--http", protocol, "--no-access-log", "--log-level", "warning"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{protocol} did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    script = BENCH / "results" / "guard_cost.lua"
    script.write_text(LUA)
    ports = {name: free_port() for name in PROTOCOLS}
    procs = {name: serve(protocol, ports[name]) for name, protocol in PROTOCOLS.items()}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in PROTOCOLS}
    try:
        for _ in range(args.rounds):
            for name, proc in procs.items():
                before = cpu_seconds(proc.pid)
                url = f"http://127.0.0.1:{ports[name]}/"
                out = subprocess.run(
                    ["wrk", "-t1", "-c16", f"-d{args.duration}s", "-s", str(script), url],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                requests = int(next(x for x in out.splitlines() if "requests in" in x).split()[0])
                used = cpu_seconds(proc.pid) - before
                sample = {"rps": requests / args.duration, "cpu_us": used / requests * 1e6}
                samples[name].append(sample)
                print(name, {k: round(v, 1) for k, v in sample.items()}, flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
        script.unlink(missing_ok=True)
    result: dict[str, Any] = {
        "loadavg_1m": os.getloadavg()[0],
        "median": {
            name: {
                "rps": round(statistics.median(s["rps"] for s in runs), 1),
                "cpu_us_per_request": round(statistics.median(s["cpu_us"] for s in runs), 1),
            }
            for name, runs in samples.items()
        },
        "samples": samples,
    }
    (BENCH / "results" / "guard_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"], indent=2))


if __name__ == "__main__":
    main()
