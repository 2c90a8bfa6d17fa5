"""The container bootstrap scripts, run for real without Docker: deploy/postgres/initdb/10-shop.sh on
a fresh private PostgreSQL cluster (scram-sha-256 over TCP, like the official image), then
deploy/pgbouncer/docker-entrypoint.sh with the container's pgbouncer.ini in front of it, and the
compose healthcheck commands against both.

A private cluster, because roles are cluster-wide: running roles.sql on the shared server would
change the passwords other test sessions use. It needs root (to run initdb as `postgres`) and the
PostgreSQL server binaries; the test skips with the reason otherwise."""

from __future__ import annotations

import configparser
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from shop_dev.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "deploy/postgres/initdb/10-shop.sh"
ENTRYPOINT = ROOT / "deploy/pgbouncer/docker-entrypoint.sh"
PGBOUNCER_INI = ROOT / "deploy/pgbouncer/pgbouncer.ini"
ROLES_SQL = ROOT / "deploy/postgres/roles.sql"

# Quotes, spaces and a backslash: what the scripts must pass through untouched.
PASSWORDS = {
    "USERS_DB_PASSWORD": 'u"se rs\\pw-1',
    "CATALOG_DB_PASSWORD": "cat'alog pw 2",
    "ORDERS_DB_PASSWORD": "orders$pw`3",
}
ROLES = {
    "users_svc": "USERS_DB_PASSWORD",
    "catalog_svc": "CATALOG_DB_PASSWORD",
    "orders_svc": "ORDERS_DB_PASSWORD",
}


def fetch(sql: str, **dsn: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(**dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows
    finally:
        conn.close()


def _pg_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def _compose_healthcheck(service: str) -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return str(test[1]).replace("$$", "$")


# initdb, pg_ctl and PgBouncer refuse to run as root: the processes themselves switch to postgres
# (no runuser in between, so signals reach PgBouncer directly).
AS_POSTGRES: dict[str, Any] = {"user": "postgres", "group": "postgres", "extra_groups": []}


def readable_copy(source: Path, directory: Path) -> Path:
    """A copy of `source` that `postgres` can read: the checkout may sit in a folder only its owner
    can enter (mode 700, like a root home directory), so nothing runs as postgres from there."""
    copy = directory / source.name
    shutil.copy(source, copy)
    copy.chmod(0o644)
    return copy


def postgres_env(pg_bin: Path, extra: dict[str, str]) -> dict[str, str]:
    return {"PATH": f"{pg_bin}:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", **extra}


@dataclass
class Cluster:
    bin: Path
    base: Path
    port: int

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def as_postgres(
        self, argv: list[str], env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=postgres_env(self.bin, env or {}),
            cwd=self.base,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            **AS_POSTGRES,
        )

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return fetch(sql, host=self.socket_dir, port=self.port, user="postgres", dbname="shop")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pg_bin = _pg_bin()
    if os.geteuid() != 0 or pg_bin is None:
        pytest.skip("needs root and the PostgreSQL server binaries (to run initdb as postgres)")
    # Not under pytest's basetemp: its root is 0700 and other sessions reset it, and the postgres
    # user must reach this directory.
    base = Path(tempfile.mkdtemp(prefix="shop-pgcluster-"))
    shutil.chown(base, "postgres", "postgres")
    cluster = Cluster(pg_bin, base, free_port())
    data = base / "data"
    started = False
    try:
        cluster.as_postgres(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        )
        options = f"-p {cluster.port} -k {base} -c listen_addresses=127.0.0.1"
        log = str(base / "postgres.log")
        cluster.as_postgres(
            [str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"]
        )
        started = True
        cluster.as_postgres(
            [str(pg_bin / "createdb"), "-h", str(base), "-p", str(cluster.port), "shop"]
        )
        yield cluster
    finally:
        if started:
            cluster.as_postgres(
                [str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False
            )
        shutil.rmtree(base, ignore_errors=True)


def _init_env(cluster: Cluster, roles_sql: Path, **overrides: str) -> dict[str, str]:
    return {
        "PGHOST": cluster.socket_dir,
        "PGPORT": str(cluster.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "shop",
        "SHOP_ROLES_SQL": str(roles_sql),
        "DB_STATEMENT_TIMEOUT": "7s",
        **PASSWORDS,
        **overrides,
    }


@pytest.fixture(scope="module")
def bootstrapped(cluster: Cluster) -> Cluster:
    roles_sql = readable_copy(ROLES_SQL, cluster.base)  # where the image mounts it
    init_script = readable_copy(INIT_SCRIPT, cluster.base)
    result = cluster.as_postgres(["sh", str(init_script)], env=_init_env(cluster, roles_sql))
    assert "roles users_svc, catalog_svc, orders_svc and their schemas are ready" in result.stdout
    return cluster


@dataclass
class Bouncer:
    port: int
    auth_file: Path
    process: subprocess.Popen[str]
    log: Path


@pytest.fixture(scope="module")
def bouncer(bootstrapped: Cluster) -> Iterator[Bouncer]:
    base = bootstrapped.base
    port = free_port()
    ini = PGBOUNCER_INI.read_text()
    replacements = {
        "host=postgres port=5432": f"host=127.0.0.1 port={bootstrapped.port}",
        "listen_addr = 0.0.0.0": "listen_addr = 127.0.0.1",  # a test stays on loopback
        "listen_port = 6432": f"listen_port = {port}",
        "auth_file = /etc/pgbouncer/userlist.txt": f"auth_file = {base}/userlist.txt",
    }
    for old, new in replacements.items():
        assert old in ini
        ini = ini.replace(old, new)
    (base / "pgbouncer.ini").write_text(ini)
    (base / "pgbouncer.ini").chmod(0o644)
    log = base / "pgbouncer.out"
    env = {
        "PGBOUNCER_INI": str(base / "pgbouncer.ini"),
        "PGBOUNCER_AUTH_FILE": str(base / "userlist.txt"),
        **PASSWORDS,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(readable_copy(ENTRYPOINT, base))],
            env=postgres_env(bootstrapped.bin, env),
            cwd=base,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            **AS_POSTGRES,
        )
    deadline = time.monotonic() + 20
    while "process up" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    try:
        yield Bouncer(port, base / "userlist.txt", process, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TestPostgresInit:
    def test_init_script_creates_one_login_role_per_service(self, bootstrapped: Cluster) -> None:
        rows = bootstrapped.fetch(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolconfig"
            " FROM pg_roles WHERE rolname LIKE '%\\_svc' ORDER BY rolname"
        )
        assert [row[:5] for row in rows] == [
            ("catalog_svc", True, False, False, False),
            ("orders_svc", True, False, False, False),
            ("users_svc", True, False, False, False),
        ]
        for row in rows:
            assert "statement_timeout=7s" in row[5]

    def test_each_schema_is_owned_by_its_service_role(self, bootstrapped: Cluster) -> None:
        rows = bootstrapped.fetch(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
            " WHERE nspname IN ('users', 'catalog', 'orders') ORDER BY nspname"
        )
        assert rows == [
            ("catalog", "catalog_svc"),
            ("orders", "orders_svc"),
            ("users", "users_svc"),
        ]

    def test_roles_log_in_over_tcp_with_the_passwords_from_the_environment(
        self, bootstrapped: Cluster
    ) -> None:
        for role, variable in ROLES.items():
            rows = fetch(
                "SELECT current_user",
                host="127.0.0.1",
                port=bootstrapped.port,
                user=role,
                password=PASSWORDS[variable],
                dbname="shop",
            )
            assert rows == [(role,)]

    def test_init_script_stops_when_a_password_is_missing(self, bootstrapped: Cluster) -> None:
        roles_sql = bootstrapped.base / "roles.sql"
        env = _init_env(bootstrapped, roles_sql)
        del env["ORDERS_DB_PASSWORD"]
        init_script = readable_copy(INIT_SCRIPT, bootstrapped.base)
        result = bootstrapped.as_postgres(["sh", str(init_script)], env=env, check=False)
        assert result.returncode != 0
        assert "ORDERS_DB_PASSWORD must be set (see .env.example)" in result.stderr

    def test_compose_postgres_healthcheck_passes(self, bootstrapped: Cluster) -> None:
        command = _compose_healthcheck("postgres").replace(
            "-h 127.0.0.1", f"-h 127.0.0.1 -p {bootstrapped.port}"
        )
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


class TestPgBouncerEntrypoint:
    def test_entrypoint_writes_a_private_auth_file_with_every_role(self, bouncer: Bouncer) -> None:
        assert bouncer.auth_file.stat().st_mode & 0o777 == 0o600
        lines = bouncer.auth_file.read_text().splitlines()
        assert lines == [
            '"users_svc" "u""se rs\\pw-1"',
            '"catalog_svc" "cat\'alog pw 2"',
            '"orders_svc" "orders$pw`3"',
        ]
        assert not list(bouncer.auth_file.parent.glob("userlist.txt.tmp.*"))

    def test_every_role_logs_in_through_pgbouncer(self, bouncer: Bouncer) -> None:
        for role, variable in ROLES.items():
            rows = fetch(
                "SELECT current_user",
                host="127.0.0.1",
                port=bouncer.port,
                user=role,
                password=PASSWORDS[variable],
                dbname="shop",
            )
            assert rows == [(role,)]

    def test_a_wrong_password_is_refused_by_pgbouncer(self, bouncer: Bouncer) -> None:
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            fetch(
                "SELECT 1",
                host="127.0.0.1",
                port=bouncer.port,
                user="users_svc",
                password="wrong",
                dbname="shop",
            )

    def test_compose_pgbouncer_healthcheck_passes_and_fails_on_a_bad_password(
        self, bouncer: Bouncer
    ) -> None:
        command = _compose_healthcheck("pgbouncer").replace("-p 6432", f"-p {bouncer.port}")
        env = {"PATH": os.environ["PATH"]}
        good = subprocess.run(
            ["sh", "-c", command],
            env=env | {"USERS_DB_PASSWORD": PASSWORDS["USERS_DB_PASSWORD"]},
            capture_output=True,
            text=True,
            check=False,
        )
        assert good.returncode == 0, good.stderr
        bad = subprocess.run(
            ["sh", "-c", command],
            env=env | {"USERS_DB_PASSWORD": "wrong"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert bad.returncode != 0

    def test_the_password_is_not_printed(self, bouncer: Bouncer) -> None:
        output = bouncer.log.read_text()
        assert "wrote" in output
        assert all(pw not in output for pw in PASSWORDS.values())

    def test_entrypoint_stops_when_a_password_is_missing(self, tmp_path: Path) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "PGBOUNCER_AUTH_FILE": str(tmp_path / "userlist.txt"),
            "USERS_DB_PASSWORD": "x",
            "CATALOG_DB_PASSWORD": "y",
        }
        result = subprocess.run(
            ["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 1
        assert result.stderr == "pgbouncer: ORDERS_DB_PASSWORD must be set (see .env.example)\n"
        assert list(tmp_path.iterdir()) == []


def test_pgbouncer_ini_pools_transactions_with_md5_on_6432() -> None:
    parser = configparser.ConfigParser(comment_prefixes=(";", "#"), interpolation=None)
    parser.read_string(PGBOUNCER_INI.read_text())
    settings = parser["pgbouncer"]
    assert (settings["pool_mode"], settings["auth_type"], settings["listen_port"]) == (
        "transaction",
        "md5",
        "6432",
    )
    assert settings["auth_file"] == "/etc/pgbouncer/userlist.txt"
    assert parser["databases"]["shop"] == "host=postgres port=5432 dbname=shop"
    assert "logfile" not in settings, "in a container PgBouncer logs to stderr"


def _shellcheck() -> list[str]:
    """shellcheck from PATH: its PyPI wheel is locked in the dev group, so `uv run` has it."""
    binary = shutil.which("shellcheck")
    assert binary is not None, "shellcheck missing: run `make setup`"
    return [binary]


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = _shellcheck()
    result = subprocess.run(
        [*shellcheck, "--shell=sh", str(INIT_SCRIPT), str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (0, "")
