"""Child processes of the launcher, the test harness and the benchmarks: one way to start them, wait
for their health, stop them, and find who holds a port.

Every child dies with whoever started it, whatever ends that: it runs in a session of its own (a
terminal's Ctrl-C reaches only the launcher, which stops everything in order), and the kernel sends
it SIGKILL when the thread that started it exits (PR_SET_PDEATHSIG), so even a SIGKILLed launcher
leaves no stray. Start children from a thread that lives as long as they should (the main thread):
the signal follows the starting *thread*, not the process.

A service with WEB_CONCURRENCY > 1 is a supervisor and its workers, all in the child's process
group: the stop signal goes to the supervisor (it stops its workers and waits for them), SIGKILL
goes to the whole group, and each worker also dies with its supervisor (shop_common.server)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

APPS = {
    "users": "users.main:create_app",
    "catalog": "catalog.main:create_app",
    "orders": "orders.main:create_app",
    "gateway": "gateway.main:create_app",
}
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick); bind it soon, it is not reserved."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child, after fork and after any change of user
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(120)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(121)

    return preexec


def start_process(
    command: list[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` with stdout and stderr appended to `log_path`; `env` is added to this
    process's environment. `user`: run as that user (with its primary group only)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    entry = pwd.getpwnam(user) if user is not None else None
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=[] if entry else None,
        )


def uvicorn_command(port: int, *args: str, host: str = "127.0.0.1") -> list[str]:
    """`python -m uvicorn <args> --host --port --no-access-log` (args: the app and its options)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        *args,
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]


def _tail(log_path: Path | None, chars: int = 4000) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return log_path.read_text(errors="replace")[-chars:]


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    timeout: float = 60,
    log_path: Path | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early (with the log's tail) if `process` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode}; log:\n{_tail(log_path)}"
            )
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(
        f"{url} did not answer 200 within {timeout} s ({last!r}); log:\n{_tail(log_path)}"
    )


def stop_processes(
    stops: Iterable[tuple[subprocess.Popen[bytes], int]],
    *,
    timeout: float = 10,
    hurry: threading.Event | None = None,
) -> None:
    """Send each process its stop signal at once, wait for all of them together, and SIGKILL
    whatever is still running after `timeout` seconds, or as soon as `hurry` is set. Bounded: at
    most `timeout` plus the time the kernel takes to reap killed processes."""
    pending = []
    for process, stop_signal in stops:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(stop_signal)
            pending.append(process)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        time.sleep(0.05)
        pending = [p for p in pending if p.poll() is None]
    for process in pending:
        _kill_group(process)
    for process in pending:
        process.wait()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL `process` and, when it leads its own process group (start_process starts every
    child in a session of its own), everything in that group: a supervisor's workers too. Only for
    a process not reaped yet, so its pid, and with it the group id, cannot have been reused."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 10, stop_signal: int = signal.SIGTERM
) -> None:
    stop_processes([(process, stop_signal)], timeout=timeout)


def port_holder(port: int) -> str | None:
    """Who listens on TCP `port` (any address): "pid 123 (cmdline)", or None when nobody does."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return "a process this user may not inspect"
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())
            except psutil.Error:
                cmdline = "?"
            return f"pid {conn.pid} ({cmdline[:200]})"
    return None


def busy_ports(ports: Mapping[str, int], host: str = "127.0.0.1") -> list[str]:
    """One line per port of `ports` (name → port) that cannot be bound on `host`, naming its holder."""
    busy = []
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "busy"
            try:
                sock.bind((host, port))
            except OSError as exc:
                holder = port_holder(port) or f"unknown ({exc.strerror})"
                busy.append(f"port {port} ({name}) is in use by {holder}")
    return busy


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
        """The images' command (shop_common.server): uvicorn with the guarded request-head
        protocol and WEB_CONCURRENCY worker processes, from this process's environment."""
        return [
            sys.executable,
            "-m",
            "shop_common.server",
            APPS[self.name],
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--timeout-graceful-shutdown",
            "5",
            # The gateway sets X-Forwarded-For itself; uvicorn must not believe a client's copy.
            *(["--no-proxy-headers"] if self.name == "gateway" else []),
        ]

    def start(self, extra_env: Mapping[str, str] | None = None) -> None:
        if self.running:
            return
        if extra_env:
            self.env.update(extra_env)
        self.process = start_process(self.command(), log_path=self.log_path, env=self.env)

    def wait_live(self, timeout: float = 30) -> None:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        wait_healthy(
            f"{self.url}/health/live", self.process, timeout=timeout, log_path=self.log_path
        )

    def tail(self, chars: int = 4000) -> str:
        return _tail(self.log_path, chars)

    def stop(self, timeout: float = 15) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            stop_process(self.process, 0, signal.SIGKILL)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
