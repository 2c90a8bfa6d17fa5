"""The whole stack as processes: database bootstrap, PgBouncer, users, catalog, orders, gateway.

One implementation serves the local launcher (`shop-dev up`) and the test harness."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shop_dev.bootstrap import (
    SERVICES,
    Cluster,
    bootstrap_roles,
    create_database,
    migrate_all,
    role_url,
)
from shop_dev.defaults import role_passwords
from shop_dev.pgbouncer import PgBouncer
from shop_dev.processes import APPS, ServiceProcess, busy_ports, free_port, stop_processes

PROCESS_NAMES = ("users", "catalog", "orders", "gateway")
# libpq options of a TCP URL to PgBouncer, as docker-compose.yml and deploy/k8s give the services:
# this PgBouncer has no TLS and no GSSAPI, so libpq need not ask for either on every (NullPool)
# login (docs/CONFIGURATION.md, "The services' database URL"). Over a Unix socket libpq asks for
# neither.
PGBOUNCER_CONNECT_OPTIONS = "sslmode=disable&gssencmode=disable"


@dataclass(frozen=True)
class Superuser:
    username: str
    email: str
    password: str


@dataclass
class StackConfig:
    cluster: Cluster
    database: str
    passwords: dict[str, str]
    internal_api_token: str
    ports: dict[str, int]  # pgbouncer, users, catalog, orders, gateway
    workdir: Path  # logs
    pgbouncer_dir: Path  # must be traversable by `postgres` when run as root
    jwt_private_key_file: Path
    superuser: Superuser
    environment: str = "dev"
    use_pgbouncer: bool = True
    log_json: bool = True
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Worker processes per process name (WEB_CONCURRENCY); 1 for any name not listed, whatever
    # the launcher's own environment says (extra_env, e.g. bench/run.py --set, still wins).
    web_concurrency: dict[str, int] = field(default_factory=dict)
    # Session-revocation stamps (users writes, catalog and orders read) and users' rate limits.
    redis_url: str | None = None
    redis_key_prefix: str = "shop:"


def throwaway_config(
    cluster: Cluster,
    *,
    database_prefix: str,
    workdir: Path,
    jwt_private_key_file: Path,
    superuser: Superuser,
    extra_env: dict[str, dict[str, str]],
) -> StackConfig:
    """A stack of its own for tests and benchmarks: a new database `<prefix>_<hex>`, free ports,
    test mode, a random internal token. Roles are cluster-wide, so they keep the shared passwords."""
    return StackConfig(
        cluster=cluster,
        database=f"{database_prefix}_{uuid.uuid4().hex[:12]}",
        passwords=role_passwords(),
        internal_api_token=secrets.token_urlsafe(32),
        ports={name: free_port() for name in ("pgbouncer", *PROCESS_NAMES)},
        workdir=workdir,
        # /tmp, not under workdir: PgBouncer runs as `postgres` and must reach its files
        pgbouncer_dir=Path(tempfile.mkdtemp(prefix=f"{database_prefix}-pgbouncer-")),
        jwt_private_key_file=jwt_private_key_file,
        superuser=superuser,
        environment="test",
        extra_env=extra_env,
        redis_url=os.environ.get("SHOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_key_prefix=f"{database_prefix}:{uuid.uuid4().hex[:12]}:",  # runs never share keys
    )


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        c = config
        self.pgbouncer = PgBouncer(
            c.pgbouncer_dir,
            port=c.ports["pgbouncer"],
            databases={
                c.database: f"host={c.cluster.host} port={c.cluster.port} dbname={c.database}"
            },
            users={f"{s}_svc": c.passwords[s] for s in SERVICES},
        )
        self.processes: dict[str, ServiceProcess] = {
            name: ServiceProcess(
                name=name,
                port=c.ports[name],
                env=self._env(name),
                log_path=c.workdir / f"{name}.log",
            )
            for name in PROCESS_NAMES
        }

    # ---- configuration -------------------------------------------------------------------
    def database_url(self, service: str) -> str:
        """The services' runtime URL. PgBouncer runs on this machine, so they log in through its
        Unix socket: a NullPool login there costs the service about 0.1 ms of CPU less than one
        over loopback TCP (no TCP handshake; docs/PERFORMANCE.md, "Fifth pass"). Compose and
        Kubernetes run PgBouncer in a container of its own and use TCP."""
        if self.config.use_pgbouncer:
            return self._role_url(
                service, port=self.pgbouncer.port, socket_dir=self.pgbouncer.socket_dir
            )
        return self.direct_url(service)

    def bouncer_tcp_url(self, service: str) -> str:
        """The same PgBouncer over TCP, as compose and Kubernetes reach it."""
        url = self._role_url(service, host=self.pgbouncer.host, port=self.pgbouncer.port)
        return f"{url}?{PGBOUNCER_CONNECT_OPTIONS}"

    def direct_url(self, service: str) -> str:
        return self._role_url(service)

    def _role_url(
        self,
        service: str,
        *,
        host: str | None = None,
        port: int | None = None,
        socket_dir: Path | None = None,
    ) -> str:
        """The service role's URL to this stack's database; where to reach it is the caller's."""
        c = self.config
        return role_url(
            c.cluster,
            service,
            c.passwords[service],
            c.database,
            host=host,
            port=port,
            socket_dir=socket_dir,
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config.ports[name]}"

    def _env(self, name: str) -> dict[str, str]:
        c = self.config
        env = {
            "ENVIRONMENT": c.environment,
            "INTERNAL_API_TOKEN": c.internal_api_token,
            "LOG_JSON": "true" if c.log_json else "false",
            "LOG_LEVEL": "INFO",
            "WEB_CONCURRENCY": str(c.web_concurrency.get(name, 1)),
        }
        if name in SERVICES:
            env["DATABASE_URL"] = self.database_url(name)
            env["MIGRATIONS_DATABASE_URL"] = self.direct_url(name)
            if c.redis_url:
                env["REDIS_URL"] = c.redis_url
                env["REDIS_KEY_PREFIX"] = c.redis_key_prefix
        jwks_url = f"{self.url('users')}/.well-known/jwks.json"
        match name:
            case "users":
                env |= {
                    "FIRST_SUPERUSER_USERNAME": c.superuser.username,
                    "FIRST_SUPERUSER_EMAIL": c.superuser.email,
                    "FIRST_SUPERUSER_PASSWORD": c.superuser.password,
                    "JWT_PRIVATE_KEY_FILE": str(c.jwt_private_key_file),
                }
            case "catalog":
                env["JWKS_URL"] = jwks_url
            case "orders":
                env |= {
                    "JWKS_URL": jwks_url,
                    "CATALOG_URL": self.url("catalog"),
                    "USERS_URL": self.url("users"),
                }
            case "gateway":
                env |= {
                    "USERS_URL": self.url("users"),
                    "CATALOG_URL": self.url("catalog"),
                    "ORDERS_URL": self.url("orders"),
                }
        env |= c.extra_env.get(name, {})
        return env

    def env(self, name: str) -> dict[str, str]:
        return dict(self.processes[name].env)

    # ---- lifecycle -----------------------------------------------------------------------
    def busy_ports(self) -> list[str]:
        """The stack's ports that something else holds, each with its holder (empty: all free)."""
        ports = {n: p for n, p in self.config.ports.items() if n in PROCESS_NAMES}
        if self.config.use_pgbouncer:
            ports["pgbouncer"] = self.config.ports["pgbouncer"]
        return busy_ports(ports)

    def prepare_database(self) -> bool:
        """Create the database if missing, (re)apply roles and schemas, migrate every service."""
        c = self.config
        created = create_database(c.cluster, c.database)
        bootstrap_roles(c.cluster, c.database, c.passwords)
        migrate_all(c.cluster, c.database, c.passwords)
        return created

    def start_all(self, names: tuple[str, ...] = PROCESS_NAMES, timeout: float = 60) -> None:
        if self.config.use_pgbouncer:
            self.pgbouncer.start()
        for name in names:
            self.processes[name].start()
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda n: self.processes[n].wait_live(timeout), names))

    def start(self, name: str, extra_env: Mapping[str, str] | None = None) -> None:
        self.processes[name].start(extra_env)
        self.processes[name].wait_live()

    def stop(self, name: str) -> None:
        self.processes[name].stop()

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str, extra_env: Mapping[str, str] | None = None) -> None:
        self.stop(name)
        self.start(name, extra_env)

    def log_path(self, name: str) -> Path:
        return self.processes[name].log_path

    def stop_all(self, timeout: float = 10, hurry: threading.Event | None = None) -> None:
        """Stop every process at once (graceful signal), wait for them together, SIGKILL the rest
        after `timeout` seconds or as soon as `hurry` is set."""
        stops = [
            (process.process, signal.SIGTERM)
            for process in self.processes.values()
            if process.process is not None
        ]
        if self.pgbouncer.process is not None:
            stops.append((self.pgbouncer.process, self.pgbouncer.stop_signal))
        stop_processes(stops, timeout=timeout, hurry=hurry)
        for process in self.processes.values():
            process.process = None
        self.pgbouncer.process = None


__all__ = [
    "APPS",
    "PROCESS_NAMES",
    "Stack",
    "StackConfig",
    "Superuser",
    "free_port",
    "throwaway_config",
]
