"""WEB_CONCURRENCY: `python -m shop_common.server` (the images' and the launcher's command) runs that
many worker processes, in real processes: every worker answers, /metrics adds up all of them, and
a stop, however it comes, leaves no process and no port behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from shop_common.server import web_concurrency
from shop_common.settings import MAX_WEB_CONCURRENCY, ShopSettings
from shop_dev.processes import (
    ServiceProcess,
    busy_ports,
    free_port,
    start_process,
    stop_process,
    wait_healthy,
)
from shop_dev.testing import RunningStack

HERE = Path(__file__).parent
SERVE = [sys.executable, "-m", "shop_common.server"]


def _count(metrics: str, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _workers(supervisor: int) -> list[psutil.Process]:
    """The supervisor's uvicorn workers (not multiprocessing's resource tracker)."""
    children = psutil.Process(supervisor).children()
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


def _gone(pids: list[int], timeout: float = 10) -> list[int]:
    """The pids of `pids` still running (zombies count as gone) after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _busy_after(ports: dict[str, int], timeout: float = 5) -> list[str]:
    """busy_ports after up to `timeout` seconds: when processes are SIGKILLed, the kernel tears
    their listening socket down after they are gone, not with them (seen: bind refused for a
    moment, with no process holding the port)."""
    deadline = time.monotonic() + timeout
    while (busy := busy_ports(ports)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return busy


class Served:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {"PYTHONPATH": str(HERE), "WEB_CONCURRENCY": "2"}
    command = [*SERVE, "workers_app:create_app", "--port", str(port)]
    process = start_process(command, log_path=log, env=env)
    served = Served(process, port, log)
    try:
        wait_healthy(f"{served.url}/health/live", process, timeout=60, log_path=log)
        yield served
    finally:
        stop_process(process, timeout=15)


def _pid_on_a_new_connection(url: str) -> int:
    with httpx.Client(timeout=10) as client:  # a new connection: the kernel picks the worker
        pid: int = client.get(f"{url}/pid").json()["pid"]
        return pid


class TestTwoWorkers:
    def test_both_workers_answer_and_metrics_count_every_request(self, two_workers: Served) -> None:
        workers = {w.pid for w in _workers(two_workers.process.pid)}
        seen: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            while set(seen) != workers and len(seen) < 800:
                seen += pool.map(lambda _: _pid_on_a_new_connection(two_workers.url), range(40))

        metrics = httpx.get(f"{two_workers.url}/metrics", timeout=10).text

        assert len(workers) == 2
        assert set(seen) == workers
        # Every worker's requests, whichever worker answered the scrape: more than either alone.
        assert _count(metrics, "shop_http_requests_total", route="/pid") == len(seen)
        assert max(seen.count(pid) for pid in workers) < len(seen)

    def test_stopping_leaves_no_process_no_port_and_no_metrics_files(
        self, two_workers: Served
    ) -> None:
        workers = _workers(two_workers.process.pid)
        metrics_dir = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        everyone = [
            two_workers.process.pid,
            *(c.pid for c in psutil.Process(two_workers.process.pid).children()),
        ]
        assert metrics_dir.is_dir()

        stop_process(two_workers.process, timeout=15)

        assert two_workers.process.returncode == 0, two_workers.log.read_text()
        assert _gone(everyone) == []
        assert busy_ports({"server": two_workers.port}) == []
        assert not metrics_dir.exists()

    def test_workers_die_with_a_killed_supervisor(self, two_workers: Served) -> None:
        workers = _workers(two_workers.process.pid)
        left_behind = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])

        os.kill(two_workers.process.pid, signal.SIGKILL)  # the supervisor only, not its group
        two_workers.process.wait()

        assert _gone([w.pid for w in workers]) == []
        assert _busy_after({"server": two_workers.port}) == []
        assert left_behind.is_dir()  # nobody was left to remove it...
        done = subprocess.run(
            [*SERVE, "workers_app:broken", "--port", str(free_port())],
            env={**os.environ, "PYTHONPATH": str(HERE), "WEB_CONCURRENCY": "2"},
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 3
        assert not left_behind.exists()  # ...so the next start does


def test_the_launcher_stops_a_two_worker_catalog_that_counts_every_request(
    stack: RunningStack, tmp_path: Path
) -> None:
    catalog = ServiceProcess(
        name="catalog",
        port=free_port(),
        env={**stack.env("catalog"), "WEB_CONCURRENCY": "2"},
        log_path=tmp_path / "catalog.log",
    )
    catalog.start()
    try:
        catalog.wait_live(timeout=60)
        assert catalog.process is not None
        supervisor = catalog.process.pid
        workers = [w.pid for w in _workers(supervisor)]
        ready = httpx.get(f"{catalog.url}/health/ready", timeout=10)

        def missing_product(_: int) -> int:
            with httpx.Client(timeout=10) as client:
                return client.get(f"{catalog.url}/products/2000000000").status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(missing_product, range(60)))
        metrics = httpx.get(f"{catalog.url}/metrics", timeout=10).text
    finally:
        catalog.stop()

    assert len(workers) == 2
    assert ready.status_code == 200, ready.text
    assert statuses == [404] * 60
    route = "/products/{product_id}"
    assert _count(metrics, "shop_http_requests_total", service="catalog", route=route) == 60
    assert _gone([supervisor, *workers]) == []
    assert busy_ports({"catalog": catalog.port}) == []


def test_gateway_workers_share_one_metrics_port(stack: RunningStack, tmp_path: Path) -> None:
    metrics_port = free_port()
    gateway = ServiceProcess(
        name="gateway",
        port=free_port(),
        env={**stack.env("gateway"), "WEB_CONCURRENCY": "2", "METRICS_PORT": str(metrics_port)},
        log_path=tmp_path / "gateway.log",
    )
    gateway.start()
    try:
        gateway.wait_live(timeout=60)
        assert gateway.process is not None
        workers = [w.pid for w in _workers(gateway.process.pid)]

        def unknown_path(_: int) -> int:
            with httpx.Client(timeout=10) as client:
                return client.get(f"{gateway.url}/nowhere").status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(unknown_path, range(40)))
        scrapes = []
        for _ in range(6):  # new connections: any worker's listener may answer each
            with httpx.Client(timeout=10) as client:
                scrapes.append(client.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
    finally:
        gateway.stop()

    assert len(workers) == 2
    assert statuses == [404] * 40
    counts = {
        _count(s, "shop_http_requests_total", service="gateway", status="404") for s in scrapes
    }
    assert counts == {40.0}
    assert _gone(workers) == []
    assert busy_ports({"gateway": gateway.port, "metrics": metrics_port}) == []


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WEB_CONCURRENCY + 1), "two"])
def test_an_out_of_range_worker_count_is_refused_before_the_port_is_bound(value: str) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "WEB_CONCURRENCY": value}
    command = [*SERVE, "workers_app:create_app", "--port", str(port)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=60, check=False)

    assert done.returncode != 0
    assert f"WEB_CONCURRENCY={value!r}" in done.stderr.decode()
    with pytest.raises(ValueError, match="web_concurrency"):
        ShopSettings.model_validate(
            {"database_url": "x", "internal_api_token": "t" * 16, "web_concurrency": value}
        )


def test_a_worker_whose_app_fails_stops_the_service_with_uvicorns_startup_failure(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE), "WEB_CONCURRENCY": "2"}
    command = [*SERVE, "workers_app:broken", "--port", str(port)]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)

    assert done.returncode == 3, done.stderr.decode()[-2000:]
    assert busy_ports({"server": port}) == []


def test_worker_count_defaults_to_one_and_accepts_the_bounds() -> None:
    assert web_concurrency({}) == 1
    assert web_concurrency({"WEB_CONCURRENCY": " "}) == 1
    assert web_concurrency({"WEB_CONCURRENCY": "1"}) == 1
    assert web_concurrency({"WEB_CONCURRENCY": str(MAX_WEB_CONCURRENCY)}) == MAX_WEB_CONCURRENCY
