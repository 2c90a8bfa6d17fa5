"""`make bench` reports every target of DESIGN §8 (issue 16's table) as pass, miss or not run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from shopbench import cpu
from shopbench.report import Target, targets


def _scenario(rps: float, p99: float, **cpu: float) -> dict[str, Any]:
    return {
        "requests": int(rps * 10),
        "success_rps": rps,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "cpu_ms_per_request": cpu,
    }


def _by_target(lines: list[Target]) -> dict[str, Target]:
    return {line.what: line for line in lines}


def test_every_cpu_and_throughput_target_is_judged_from_the_measurements() -> None:
    results = {
        "product_direct": _scenario(800, 40, catalog=1.2),
        "product_gateway": _scenario(760, 45, catalog=1.25, gateway=0.31),
        "users_me_gateway": _scenario(990, 30, users=0.9, gateway=0.2),
        "order_gateway": _scenario(210, 160, total=7.9, orders=3.0),
    }
    compared = {"gateway_vs_direct": {"throughput_ratio": 0.95}}

    lines = _by_target(targets(results, compared, None))

    verdicts = {what: line.passed for what, line in lines.items()}
    assert verdicts == {
        "gateway vs direct, `GET /products/{id}` throughput": True,
        "gateway CPU per proxied request (`GET /products/{id}`)": False,  # 0.31 > 0.25
        "`GET /products/{id}` through the gateway: catalog CPU": True,
        "`GET /products/{id}` through the gateway: throughput": True,
        "`GET /users/me` through the gateway: users CPU": True,
        "`GET /users/me` through the gateway: throughput": False,  # 990 < 1,000
        "`POST /orders/` through the gateway: CPU of all processes": True,
        "`POST /orders/` through the gateway: throughput": True,
        "`POST /orders/` through the gateway: p99": False,  # 160 > 150
        "`POST /auth/token` (Argon2id OWASP minimum)": None,
        "NullPool through PgBouncer vs small QueuePool direct (reads)": None,
        "scarce stock under contention: no oversell": None,
    }
    assert lines["`POST /orders/` through the gateway: CPU of all processes"].measured == "7.90 ms"
    assert lines["gateway CPU per proxied request (`GET /products/{id}`)"].target == "≤ 0.25 ms"


def test_a_scenario_that_did_not_run_is_reported_as_not_run_not_as_a_miss() -> None:
    lines = targets({}, {}, None)

    assert all(line.passed is None and line.measured == "not run" for line in lines)
    assert len(lines) == 12


def test_a_process_cpu_includes_its_worker_processes() -> None:
    """A service with WEB_CONCURRENCY > 1 is a supervisor; its workers' CPU is its CPU."""
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        seconds = 0.0
        while time.monotonic() < deadline and seconds < 0.25:
            time.sleep(0.05)
            own, _ = cpu.snapshot({"me": os.getpid()}, "no-such-database")
            seconds = own["me"] - time.process_time()
        assert seconds >= 0.25
    finally:
        worker.kill()
        worker.wait()
