"""The stack as local processes: uvicorn per service, started, watched and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

APPS = {
    "users": "users.main:create_app",
    "catalog": "catalog.main:create_app",
    "orders": "orders.main:create_app",
    "gateway": "gateway.main:create_app",
}


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            APPS[self.name],
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "5",
            # uvicorn's httptools protocol with a bound on the request head (431 / 408).
            "--http",
            "shop_common.server:GuardedHttpToolsProtocol",
            # The gateway sets X-Forwarded-For itself; uvicorn must not believe a client's copy.
            *(["--no-proxy-headers"] if self.name == "gateway" else []),
        ]

    def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        if self.running:
            return
        if extra_env:
            self.env.update(extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_live(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; log:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up on {self.url}; log:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
