"""The stack under test: a throwaway database, PgBouncer and the four services as local processes
(the lead's launcher, shop_dev.stack), plus a second catalog process connected DIRECTLY to
PostgreSQL through a small QueuePool, for the NullPool-vs-QueuePool comparison."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from shop_common.keys import generate_private_key_pem
from shop_dev.bootstrap import Cluster, drop_database
from shop_dev.defaults import DEFAULT_ADMIN_URL
from shop_dev.processes import ServiceProcess
from shop_dev.stack import Stack, Superuser, free_port, throwaway_config

# Raised for the benchmark only: scenario (6) logs in hundreds of times a second from one IP, the
# seed registers its users from one IP, and 16 connections queue for the hashing gate (production's
# queue of 8 would answer some of them 503 at once and inflate the request rate).
LOGIN_LIMITS_OFF = {
    "users": {
        "LOGIN_RATE_LIMIT_PER_MINUTE": "0",  # 0 disables (users.config)
        "REGISTRATION_RATE_LIMIT_PER_MINUTE": "0",
        "REGISTRATION_GLOBAL_RATE_LIMIT_PER_MINUTE": "0",
        "PASSWORD_HASH_QUEUE_SIZE": "64",
        "PASSWORD_HASH_WAIT_SECONDS": "30",
    },
    "gateway": {"LOGIN_RATE_LIMIT": str(10**9)},
}


@dataclass
class BenchEnvironment:
    stack: Stack
    pooled_catalog: ServiceProcess  # DATABASE_URL direct to PostgreSQL, DB_POOL_SIZE > 0
    pool_size: int
    logs: Path

    @property
    def admin_dsn(self) -> str:
        """libpq DSN of the PostgreSQL superuser in the bench database (invariant checks)."""
        return self.stack.config.cluster.dsn_for(self.stack.config.database)

    def url(self, name: str) -> str:
        if name == "catalog_queuepool":
            return self.pooled_catalog.url
        return self.stack.url(name)

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name (PgBouncer included), for CPU accounting and py-spy."""
        processes = {name: p.process for name, p in self.stack.processes.items()}
        processes["catalog_queuepool"] = self.pooled_catalog.process
        found = {name: p.pid for name, p in processes.items() if p is not None}
        if self.stack.pgbouncer.process is not None:
            found["pgbouncer"] = self.stack.pgbouncer.process.pid
        return found


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def bench_environment(
    pool_size: int,
    keep_logs: bool,
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
    pool_all: int = 0,
) -> Iterator[BenchEnvironment]:
    """Start everything; on the way out stop every process and drop the database.
    pool_all > 0 (an experiment): users, catalog and orders all bypass PgBouncer with a QueuePool."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so a SIGTERM still cleans up
    cluster = Cluster(os.environ.get("SHOP_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    workdir = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    key_file = workdir / "jwt-ed25519.pem"
    key_file.write_bytes(generate_private_key_pem())
    key_file.chmod(0o600)
    logs = workdir / "logs"
    config = throwaway_config(
        cluster,
        database_prefix="shop_bench",
        workdir=logs,
        jwt_private_key_file=key_file,
        superuser=Superuser(
            f"bench_admin_{secrets.token_hex(4)}",
            "bench-admin@example.com",
            secrets.token_urlsafe(24),
        ),
        extra_env={
            name: {**LOGIN_LIMITS_OFF.get(name, {}), **(extra_env or {}).get(name, {})}
            for name in ("users", "catalog", "orders", "gateway")
        },
    )
    database = config.database
    bouncer_dir = config.pgbouncer_dir
    stack = Stack(config)
    if pool_all:
        for service in ("users", "catalog", "orders"):
            stack.processes[service].env |= {
                "DATABASE_URL": stack.direct_url(service),
                "DB_POOL_SIZE": str(pool_all),
            }
    pooled = ServiceProcess(
        name="catalog",
        port=free_port(),
        env={
            **stack.env("catalog"),
            "DATABASE_URL": stack.direct_url("catalog"),
            "DB_POOL_SIZE": str(pool_size),
        },
        log_path=logs / "catalog-queuepool.log",
    )
    ok = False
    try:
        stack.prepare_database()
        stack.start_all()
        pooled.start()
        pooled.wait_live(timeout=60)  # as long as start_all gives the others (workers start slower)
        yield BenchEnvironment(stack, pooled, pool_size, logs)
        ok = True
    finally:
        pooled.stop()
        stack.stop_all()
        drop_database(cluster, database)
        shutil.rmtree(bouncer_dir, ignore_errors=True)
        if ok and not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: service logs kept in {logs}", flush=True)
