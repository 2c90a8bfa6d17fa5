"""Run wrk (the OS package) with bench/wrk/request.lua and parse the JSON line its done() prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WRK_DIR = Path(__file__).resolve().parents[1] / "wrk"
PERCENTILES = ("50", "75", "90", "95", "99", "99.9")


class WrkMissing(RuntimeError):
    pass


def find_wrk() -> str:
    path = shutil.which("wrk") or ("/usr/bin/wrk" if os.path.exists("/usr/bin/wrk") else None)
    if path is None:
        raise WrkMissing(
            "wrk is not installed. The benchmark drives load with wrk from the OS packages:\n"
            "    apt-get install wrk        (Debian/Ubuntu; brew install wrk on macOS)"
        )
    return path


def wrk_version(binary: str) -> str:
    completed = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).splitlines()[0]
    return first.split(" Copyright")[0].strip()


@dataclass(frozen=True)
class Load:
    """What one wrk run sends."""

    base_url: str
    path: str
    method: str = "GET"
    ids: tuple[int, ...] = ()
    body: str | None = None
    content_type: str | None = None
    token: str | None = None
    max_responses: int | None = None  # stop after that many answers (besides the time bound)


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]  # p50..p99.9, mean, max
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(s, 0) for s in statuses)

    @property
    def success(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def success_rps(self) -> float:
        return self.success / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "success_rps": round(self.success_rps, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors,
            "latency_ms": self.latency_ms,
            **self.extra,
        }


def parse(stdout: str) -> WrkResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{stdout[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    lat = data["latency_us"]
    latency = {f"p{p}": round(lat["percentiles"][p] / 1000, 2) for p in PERCENTILES}
    latency |= {"mean": round(lat["mean"] / 1000, 2), "max": round(lat["max"] / 1000, 2)}
    errors = data["errors"]
    return WrkResult(
        requests=int(data["requests"]),
        # active_us: first request to the last counted answer when BENCH_MAX_RESPONSES stopped
        # the thread (wrk itself keeps sleeping until --duration is over)
        duration_s=(data.get("active_us") or data["duration_us"]) / 1e6,
        statuses={int(k): int(v) for k, v in data["statuses"].items()},
        socket_errors={k: int(errors[k]) for k in ("connect", "read", "write", "timeout")},
        latency_ms=latency,
    )


def run_wrk(binary: str, load: Load, *, duration: float, connections: int) -> WrkResult:
    """Loopback only, bounded in time (wrk -d) and connections (wrk -c)."""
    if not load.base_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError(f"refusing to load anything but loopback: {load.base_url}")
    env = {
        **os.environ,
        "BENCH_WRK_DIR": str(WRK_DIR),
        "BENCH_METHOD": load.method,
        "BENCH_PATH": load.path,
        "BENCH_IDS": ",".join(map(str, load.ids)),
        "BENCH_BODY": load.body or "",
        "BENCH_CONTENT_TYPE": load.content_type or "",
        "BENCH_TOKEN": load.token or "",
        "BENCH_MAX_RESPONSES": str(load.max_responses or ""),
    }
    command = [
        binary,
        "--threads",
        "1",  # one wrk thread saturates these services and leaves the CPU to them
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "--script",
        str(WRK_DIR / "request.lua"),
        load.base_url,
    ]
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return parse(completed.stdout)
