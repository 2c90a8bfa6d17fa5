"""A real PgBouncer process (transaction pooling) for the launcher and the tests.

PgBouncer refuses to run as root: as root it is started as `postgres` (the child switches user
before it runs, so it stays our child and dies with us, see shop_dev.processes), and its work
directory (ini, userlist, log, pid) is handed to that user (notes §0.3). It runs in the foreground
(no `-d`): a daemon would escape its parent."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from shop_dev.processes import start_process, stop_processes


class PgBouncerMissing(RuntimeError):
    pass


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer") if os.path.exists(p)), None
    )


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def quote_userlist(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    stop_signal = signal.SIGINT  # safe shutdown: finish running transactions, then exit

    def __init__(
        self,
        workdir: Path,  # its parents must be traversable by `postgres` when run as root (use /tmp)
        *,
        port: int,
        databases: Mapping[str, str],
        users: Mapping[str, str],
        listen_addr: str = "127.0.0.1",
        socket_dir: Path | None = None,
        pool_size: int = 20,
        auth_type: str = "md5",
    ) -> None:
        """`databases`: name → libpq connection string of the real database (host=... dbname=...).
        `users`: role → plaintext password (auth_type md5: ~0.7 ms per login, see docs).
        It listens on `listen_addr`:`port` and on a Unix socket (`.s.PGSQL.<port>`) in
        `socket_dir` (default: `workdir`), which the local stack's services log in through."""
        self.workdir = workdir
        self.port = port
        self.host = listen_addr
        self.socket_dir = workdir if socket_dir is None else socket_dir
        self.databases = dict(databases)
        self.users = dict(users)
        self.pool_size = pool_size
        self.auth_type = auth_type
        self.process: subprocess.Popen[bytes] | None = None
        self.binary = find_pgbouncer()

    @property
    def ini_path(self) -> Path:
        return self.workdir / "pgbouncer.ini"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        dbs = "\n".join(f"{name} = {conn}" for name, conn in self.databases.items())
        self.ini_path.write_text(
            f"""[databases]
{dbs}

[pgbouncer]
listen_addr = {self.host}
listen_port = {self.port}
unix_socket_dir = {self.socket_dir}
auth_type = {self.auth_type}
auth_file = {self.workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits
logfile = {self.log_path}
pidfile = {self.workdir / "pgbouncer.pid"}
; fail fast when PostgreSQL is away, recover quickly when it is back
server_login_retry = 1
server_connect_timeout = 3
query_wait_timeout = 10
server_lifetime = 3600
server_reset_query =
; as deploy/pgbouncer/pgbouncer.ini: one login per request (NullPool), so per-connection log
; lines would drown everything else and cost PgBouncer two writes per request
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
"""
        )
        (self.workdir / "userlist.txt").write_text(
            "".join(f"{quote_userlist(u)} {quote_userlist(p)}\n" for u, p in self.users.items())
        )
        os.chmod(self.workdir, 0o700)
        for path in self.workdir.iterdir():
            os.chmod(path, 0o600)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (self.workdir, *self.workdir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, timeout: float = 10) -> None:
        if self.binary is None:
            raise PgBouncerMissing(
                "pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer)"
            )
        if self.process is not None and self.process.poll() is None:
            return
        self.write_config()
        self.process = start_process(
            [self.binary, str(self.ini_path)],
            log_path=self.workdir / "pgbouncer.out",
            cwd=self.workdir,  # not the checkout: `postgres` may not be able to enter it
            user="postgres" if os.geteuid() == 0 else None,  # it refuses to run as root
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else "(no log)"
            raise RuntimeError(
                f"pgbouncer did not start on {self.host}:{self.port}:\n{log[-2000:]}"
            )

    def stop(self, timeout: float = 10) -> None:
        if self.process is not None:
            stop_processes([(self.process, self.stop_signal)], timeout=timeout)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
