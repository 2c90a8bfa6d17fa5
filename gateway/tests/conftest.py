"""Gateway tests run real processes: stub upstreams (`upstream_app.py`) and the gateway itself,
each under uvicorn on a free loopback port, talked to over real HTTP."""

from __future__ import annotations

import http.client
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shop_dev.processes import (
    free_port,
    start_process,
    stop_process,
    uvicorn_command,
    wait_healthy,
)

# With --import-mode=importlib this file is imported as `gateway.tests.conftest`, and pytest makes
# the *directory* `gateway/` the parent module `gateway`, shadowing the real package of that name
# (services don't hit this: their tests live under `services/`). Swap the real package in.
_shadow = sys.modules.get("gateway")
if _shadow is not None and getattr(_shadow, "__file__", None) is None:  # a directory namespace
    del sys.modules["gateway"]
    importlib.import_module("gateway")

HERE = Path(__file__).parent
UPSTREAMS = ("users", "catalog", "orders")
# How every shop process is served (tools/devstack processes.py, the Dockerfiles).
GUARDED = ["--http", "shop_common.server:GuardedHttpToolsProtocol"]


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class Process:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def raw(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """Send `path` byte for byte (httpx would normalise dot segments away); JSON body."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            received = {k.lower(): v for k, v in response.getheaders()}
            return response.status, received, json.loads(body) if body else None
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        stop_process(self.proc, 5)


@dataclass
class Processes:
    tmp: Path
    started: list[Process] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        port = free_port()
        log_path = self.tmp / f"{name}-{port}.log"
        proc = start_process(uvicorn_command(port, *args), log_path=log_path, env=env)
        process = Process(f"http://127.0.0.1:{port}", proc, log_path)
        self.started.append(process)
        return process

    def start(self, name: str, args: list[str], env: dict[str, str], ready_path: str) -> Process:
        process = self.spawn(name, args, env)
        wait_healthy(process.url + ready_path, process.proc, log_path=process.log_path)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("gateway-procs"))
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def stubs(processes: Processes) -> dict[str, Process]:
    args = ["--factory", "upstream_app:create_stub", "--app-dir", str(HERE)]
    started = {
        name: processes.spawn(f"stub-{name}", args, {"STUB_NAME": name}) for name in UPSTREAMS
    }
    for stub in started.values():  # started together: each takes a second or two to import
        wait_healthy(stub.url + "/health/ready", stub.proc, log_path=stub.log_path)
    return started


GatewayFactory = Callable[..., Process]


@pytest.fixture(scope="session")
def start_gateway(processes: Processes, stubs: dict[str, Process]) -> GatewayFactory:
    """Start a gateway aimed at the stubs; keyword arguments override its environment."""

    def start(**overrides: str) -> Process:
        env = {
            "ENVIRONMENT": "test",
            "LOG_JSON": "true",
            "USERS_URL": stubs["users"].url,
            "CATALOG_URL": stubs["catalog"].url,
            "ORDERS_URL": stubs["orders"].url,
            "UPSTREAM_READ_TIMEOUT_SECONDS": "3",
            "LOGIN_RATE_LIMIT": "3",
            "REDIS_KEY_PREFIX": f"test:gateway:{uuid.uuid4().hex}:",
            "OPENAPI_CACHE_SECONDS": "0",
        }
        env.update({key.upper(): value for key, value in overrides.items()})
        # --no-proxy-headers: the gateway is the edge, so a client's X-Forwarded-For is not trusted
        args = ["--factory", "gateway.main:create_app", "--no-proxy-headers", *GUARDED]
        return processes.start("gateway", args, env, "/health/live")

    return start


@pytest.fixture(scope="session")
def refused_url() -> str:
    return closed_port_url()


@pytest.fixture(scope="session")
def gateway(start_gateway: GatewayFactory) -> Process:
    return start_gateway()


@pytest.fixture
def client(gateway: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http
