"""`shop-dev up` as a user runs it, on free ports and a database of its own: however it is ended
(Ctrl-C, then a supervisor's SIGTERM, then SIGKILL) it leaves no process behind and every port
free; a port someone else holds is reported, with the holder, before anything starts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shop_dev.bootstrap import drop_database
from shop_dev.processes import busy_ports, free_port
from shop_dev.testing import ShopDatabase, TestKeys

pytestmark = pytest.mark.stack

NAMES = ("gateway", "users", "catalog", "orders", "pgbouncer")
LAUNCHER = [sys.executable, "-c", "from shop_dev.cli import main; main(['up'])"]


@pytest.fixture(scope="module")
def launcher_database(shop_db: ShopDatabase) -> Iterator[str]:
    name = f"shop_launcher_{uuid.uuid4().hex[:12]}"
    yield name
    drop_database(shop_db.cluster, name)


def launcher_env(
    shop_db: ShopDatabase, jwt_keys: TestKeys, database: str, state: Path, ports: dict[str, int]
) -> dict[str, str]:
    return {
        **os.environ,
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "SHOP_PG_ADMIN_URL": shop_db.cluster.admin_url,
        "SHOP_DB_NAME": database,
        "SHOP_DEV_STATE_DIR": str(state),
        "JWT_PRIVATE_KEY_FILE": str(jwt_keys.private_key_file),
        "ENVIRONMENT": "dev",
        "LOG_JSON": "false",
        "REDIS_KEY_PREFIX": f"test:launcher:{uuid.uuid4().hex}:",
    }


def start_launcher(env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as out:
        # A session of its own, as a terminal would give it: the signals below reach only it.
        return subprocess.Popen(
            LAUNCHER, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def running(processes: list[psutil.Process]) -> list[str]:
    """Command lines of those still running (a zombie holds nothing: it only awaits its reaper)."""
    found = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(process.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return found


def wait_for_line(launcher: subprocess.Popen[bytes], output: Path, line: str) -> None:
    deadline = time.monotonic() + 240  # migrations and four imports on a shared 2-core box
    while line not in output.read_text():
        assert launcher.poll() is None, output.read_text()
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("gap_seconds", "workers"),
    [(0.0, 1), (1.0, 1), (0.0, 2)],
    ids=["back-to-back", "one-second-apart", "two-workers-each"],
)
def test_int_then_term_then_kill_leaves_no_process_and_frees_every_port(
    shop_db: ShopDatabase,
    jwt_keys: TestKeys,
    launcher_database: str,
    tmp_path: Path,
    gap_seconds: float,
    workers: int,
) -> None:
    ports = {name: free_port() for name in NAMES}
    output = tmp_path / "launcher.out"
    env = launcher_env(shop_db, jwt_keys, launcher_database, tmp_path / "state", ports)
    env["WEB_CONCURRENCY"] = str(workers)  # every service: a supervisor and its workers
    launcher = start_launcher(env, output)
    children: list[psutil.Process] = []
    try:
        wait_for_line(launcher, output, "ready.")
        children = psutil.Process(launcher.pid).children(recursive=True)
        services = len(NAMES) - 1  # PgBouncer is one process
        extra_workers = services * workers if workers > 1 else 0
        assert len(children) >= len(NAMES) + extra_workers, output.read_text()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            launcher.send_signal(signum)
            time.sleep(gap_seconds)
        launcher.wait(timeout=30)
        psutil.wait_procs(children, timeout=30)
        strays = running(children)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        # The launcher's PgBouncer directory (shop_dev.cli: one per port, kept between runs).
        shutil.rmtree(
            Path(tempfile.gettempdir()) / f"shop-dev-pgbouncer-{ports['pgbouncer']}",
            ignore_errors=True,
        )

    assert strays == []
    assert busy_ports(ports) == []


def test_a_busy_port_is_reported_with_its_holder_before_anything_starts(
    shop_db: ShopDatabase, jwt_keys: TestKeys, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in NAMES}
    database = f"shop_launcher_never_{uuid.uuid4().hex[:12]}"
    output = tmp_path / "launcher.out"
    env = launcher_env(shop_db, jwt_keys, database, tmp_path / "state", ports)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["catalog"]))
        holder.listen()
        launcher = start_launcher(env, output)
        try:
            code = launcher.wait(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()

    text = output.read_text()
    assert code == 1, text
    assert f"port {ports['catalog']} (catalog) is in use by pid {os.getpid()}" in text
    assert "PostgreSQL at" not in text  # reported before touching the database
    assert not (tmp_path / "state" / "logs").exists()  # and before starting anything
