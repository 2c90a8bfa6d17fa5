"""`shop-dev`: run the whole stack locally as processes (no Docker needed).

    shop-dev up       check the ports are free, create db/roles/schemas, migrate, start PgBouncer +
                      4 services, wait, print URLs; Ctrl-C (or SIGTERM/SIGHUP) stops them all
    shop-dev seed     load the demo catalog (through `catalog seed`)
    shop-dev migrate  bootstrap and migrate only

Settings come from the environment and `.env` (see .env.example); anything unset falls back to
the dev defaults, which the services accept only with ENVIRONMENT=dev."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from dotenv import load_dotenv

from shop_common.keys import generate_private_key_pem
from shop_common.server import web_concurrency
from shop_dev.bootstrap import REPO_ROOT, Cluster
from shop_dev.defaults import (
    DEFAULT_ADMIN_URL,
    DEV_INTERNAL_API_TOKEN,
    DEV_SUPERUSER,
    PORTS,
    role_passwords,
)
from shop_dev.pgbouncer import PgBouncerMissing, find_pgbouncer
from shop_dev.stack import PROCESS_NAMES, Stack, StackConfig, Superuser


def _state_dir() -> Path:
    """Logs and the dev signing key: SHOP_DEV_STATE_DIR, by default .devstack in the checkout."""
    return Path(os.environ.get("SHOP_DEV_STATE_DIR") or REPO_ROOT / ".devstack")


class Signals:
    """SIGINT, SIGTERM and SIGHUP, any number of them, in any order: the first asks for an
    orderly stop, any later one hurries it (what still runs is killed at once). The handler only
    sets events, so no signal can interrupt a stop half-way (no KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()

    def __call__(self, signum: int, _frame: object) -> None:
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self)


def _say(message: str) -> None:
    print(f"shop-dev: {message}", flush=True)


def _dev_key_file() -> Path:
    """The users service signs with this key in dev; generated once, never committed."""
    configured = os.environ.get("JWT_PRIVATE_KEY_FILE")
    if configured:
        return Path(configured)
    path = _state_dir() / "jwt-ed25519.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generate_private_key_pem())
        path.chmod(0o600)
    return path


def _web_concurrency(env: Mapping[str, str]) -> dict[str, int]:
    """Workers per process: <NAME>_WEB_CONCURRENCY, else WEB_CONCURRENCY, else 1 (validated)."""
    return {
        name: web_concurrency(
            {
                "WEB_CONCURRENCY": env.get(f"{name.upper()}_WEB_CONCURRENCY")
                or env.get("WEB_CONCURRENCY", "")
            }
        )
        for name in PROCESS_NAMES
    }


def _config(use_pgbouncer: bool) -> StackConfig:
    env = os.environ
    ports = {name: int(env.get(f"{name.upper()}_PORT", port)) for name, port in PORTS.items()}
    superuser = Superuser(
        env.get("FIRST_SUPERUSER_USERNAME", DEV_SUPERUSER[0]),
        env.get("FIRST_SUPERUSER_EMAIL", DEV_SUPERUSER[1]),
        env.get("FIRST_SUPERUSER_PASSWORD", DEV_SUPERUSER[2]),
    )
    return StackConfig(
        cluster=Cluster(env.get("SHOP_PG_ADMIN_URL", DEFAULT_ADMIN_URL)),
        database=env.get("SHOP_DB_NAME", "shop"),
        passwords=role_passwords(),
        internal_api_token=env.get("INTERNAL_API_TOKEN", DEV_INTERNAL_API_TOKEN),
        ports=ports,
        workdir=_state_dir() / "logs",
        # /tmp, not the repo: PgBouncer runs as `postgres` and must reach its files
        pgbouncer_dir=Path(tempfile.gettempdir()) / f"shop-dev-pgbouncer-{ports['pgbouncer']}",
        jwt_private_key_file=_dev_key_file(),
        superuser=superuser,
        environment=env.get("ENVIRONMENT", "dev"),
        use_pgbouncer=use_pgbouncer,
        log_json=env.get("LOG_JSON", "true").lower() == "true",
        # Unset: catalog and orders do not check revocation (a warning in their logs).
        redis_url=env.get("REDIS_URL") or None,
        redis_key_prefix=env.get("REDIS_KEY_PREFIX", "shop:"),
        web_concurrency=_web_concurrency(env),
    )


def _prepare(stack: Stack) -> None:
    c = stack.config
    _say(f"PostgreSQL at {c.cluster.host}:{c.cluster.port}, database {c.database!r}")
    created = stack.prepare_database()
    _say(("created" if created else "found") + " database; roles, schemas and migrations at head")


def cmd_up(args: argparse.Namespace) -> int:
    use_pgbouncer = not args.no_pgbouncer
    if use_pgbouncer and find_pgbouncer() is None:
        _say(
            "PgBouncer is NOT installed (apt-get install pgbouncer). Services will connect "
            "DIRECTLY to PostgreSQL, which is not how production runs. Install it, or pass "
            "--no-pgbouncer to silence this."
        )
        use_pgbouncer = False
    signals = Signals()
    signals.install()
    stack = Stack(_config(use_pgbouncer))
    busy = stack.busy_ports()
    if busy:
        for line in busy:
            _say(line)
        _say("stop it (a stray from an earlier run?) or pick other ports: <NAME>_PORT in .env")
        return 1
    _prepare(stack)
    try:
        if signals.stop.is_set():
            return 0
        try:
            stack.start_all()
        except PgBouncerMissing as exc:
            _say(str(exc))
            return 1
        c = stack.config
        if use_pgbouncer:
            _say(f"PgBouncer   127.0.0.1:{c.ports['pgbouncer']} (transaction pooling)")
        for name in ("gateway", "users", "catalog", "orders"):
            workers = c.web_concurrency.get(name, 1)
            shown = f" ({workers} workers)" if workers > 1 else ""
            _say(f"{name:<11} {stack.url(name)}{shown}   log: {stack.log_path(name)}")
        _say(f"API docs    {stack.url('gateway')}/docs")
        if c.environment == "dev":
            _say(
                f"dev superuser: {c.superuser.username} / {c.superuser.password} "
                "(set FIRST_SUPERUSER_* to change)"
            )
        _say("ready. Ctrl-C stops everything.")
        while not signals.stop.wait(0.5):
            for name, process in stack.processes.items():
                if not process.running:
                    _say(f"{name} exited unexpectedly; last log lines:\n{process.tail(2000)}")
                    return 1
            if use_pgbouncer and not stack.pgbouncer.running:
                _say(f"pgbouncer exited unexpectedly; see {stack.pgbouncer.log_path}")
                return 1
    finally:
        _say("stopping (a second Ctrl-C kills at once)...")
        stack.stop_all(timeout=10, hurry=signals.hurry)
        _say("stopped.")
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    _prepare(Stack(_config(use_pgbouncer=False)))
    return 0


def cmd_seed(_: argparse.Namespace) -> int:
    stack = Stack(_config(use_pgbouncer=False))
    _prepare(stack)
    env = {**os.environ, "ENVIRONMENT": "dev", "DATABASE_URL": stack.direct_url("catalog")}
    env.setdefault("INTERNAL_API_TOKEN", stack.config.internal_api_token)
    code = "from catalog.cli import main; main(['seed'])"
    return subprocess.call([sys.executable, "-c", code], env=env)


def main(argv: list[str] | None = None) -> None:
    load_dotenv(REPO_ROOT / ".env", override=False)
    parser = argparse.ArgumentParser(prog="shop-dev", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole stack until Ctrl-C")
    up.add_argument("--no-pgbouncer", action="store_true", help="connect services directly")
    up.set_defaults(func=cmd_up)
    sub.add_parser("migrate", help="bootstrap the database and migrate").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("seed", help="load the demo catalog").set_defaults(func=cmd_seed)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
