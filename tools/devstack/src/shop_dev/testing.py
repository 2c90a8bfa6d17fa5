"""pytest plugin: a throwaway database behind a real PgBouncer, and the whole stack as processes.

Loaded by the root conftest.py. Per test session: database `shop_test_<hex>` on the PostgreSQL at
SHOP_TEST_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres), dropped at the end.
Tests share it and isolate themselves by creating unique data (no truncation between tests).
`wait_until` polls a condition to a deadline, for any test directory (tests/containers too)."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy.engine import make_url

from shop_common.keys import generate_private_key_pem, load_private_key, public_jwk
from shop_dev.bootstrap import Cluster, drop_database
from shop_dev.defaults import DEFAULT_ADMIN_URL
from shop_dev.stack import Stack, Superuser, throwaway_config

ISSUER = "shop-users"
AUDIENCE = "shop"


@dataclass
class TestKeys:
    private_key_pem: bytes
    private_key_file: Path
    jwk: dict[str, Any]

    __test__ = False  # not a test class

    @property
    def kid(self) -> str:
        return str(self.jwk["kid"])

    @property
    def jwks_json(self) -> str:
        return json.dumps({"keys": [self.jwk]})

    def token(
        self,
        user_id: int,
        username: str = "u",
        is_superuser: bool = False,
        **claim_overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "username": username,
            "is_superuser": is_superuser,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 900,
            "jti": uuid.uuid4().hex,
        }
        claims.update(claim_overrides)
        return jwt.encode(
            {k: v for k, v in claims.items() if v is not None},
            load_private_key(self.private_key_pem),
            algorithm="EdDSA",
            headers={"kid": self.kid},
        )


class ShopDatabase:
    def __init__(self, stack: Stack, keys: TestKeys) -> None:
        self._stack = stack
        self._keys = keys
        self.name = stack.config.database
        self.cluster = stack.config.cluster
        self.internal_api_token = stack.config.internal_api_token
        self.redis_url = stack.config.redis_url
        self.redis_key_prefix = stack.config.redis_key_prefix

    @property
    def admin_dsn(self) -> str:
        """libpq DSN of the superuser, direct, in the test database (psycopg2.connect)."""
        return self.cluster.dsn_for(self.name)

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the superuser, direct, in the test database."""
        return (
            make_url(self.admin_dsn)
            .set(drivername="postgresql+psycopg2")
            .render_as_string(hide_password=False)
        )

    def direct_url(self, service: str) -> str:
        return self._stack.direct_url(service)

    def bouncer_url(self, service: str) -> str:
        """What the services get: PgBouncer's Unix socket."""
        return self._stack.database_url(service)

    def bouncer_tcp_url(self, service: str) -> str:
        return self._stack.bouncer_tcp_url(service)

    def settings_kwargs(self, service: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "environment": "test",
            "database_url": self.bouncer_url(service),
            "migrations_database_url": self.direct_url(service),
            "internal_api_token": self.internal_api_token,
            "jwks_json": self._keys.jwks_json,
            "log_json": False,
        }
        if service == "users":
            kwargs["jwt_private_key_file"] = str(self._keys.private_key_file)
        return kwargs


@pytest.fixture(scope="session")
def jwt_keys(tmp_path_factory: pytest.TempPathFactory) -> TestKeys:
    pem = generate_private_key_pem()
    path = tmp_path_factory.mktemp("keys") / "jwt-ed25519.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    return TestKeys(pem, path, public_jwk(load_private_key(pem)))


# Every test client is 127.0.0.1, so the production login limits (a few per minute per IP) would
# throttle the suite itself. The stack raises them; rate limiting has tests of its own that start
# an app or a gateway with low limits.
TEST_STACK_ENV: dict[str, dict[str, str]] = {
    "users": {
        "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
        "LOGIN_RATE_LIMIT_BURST": "100000",
        "REGISTRATION_RATE_LIMIT_PER_MINUTE": "100000",
        "REGISTRATION_RATE_LIMIT_BURST": "100000",
        "REGISTRATION_GLOBAL_RATE_LIMIT_PER_MINUTE": "100000",
        "REGISTRATION_GLOBAL_RATE_LIMIT_BURST": "100000",
        "PASSWORD_HASH_QUEUE_SIZE": "1000",
        "PASSWORD_HASH_WAIT_SECONDS": "30",
    },
    "gateway": {"LOGIN_RATE_LIMIT": "100000"},
}


@pytest.fixture(scope="session")
def stack_extra_env() -> dict[str, dict[str, str]]:
    """Per-process environment added to the test stack; override in a conftest to change it."""
    return {name: dict(env) for name, env in TEST_STACK_ENV.items()}


@pytest.fixture(scope="session")
def _stack_object(
    tmp_path_factory: pytest.TempPathFactory,
    jwt_keys: TestKeys,
    stack_extra_env: dict[str, dict[str, str]],
) -> Iterator[Stack]:
    import os

    cluster = Cluster(os.environ.get("SHOP_TEST_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    config = throwaway_config(
        cluster,
        database_prefix="shop_test",
        workdir=tmp_path_factory.mktemp("stack-logs"),
        jwt_private_key_file=jwt_keys.private_key_file,
        superuser=Superuser("admin", "admin@example.com", secrets.token_urlsafe(16)),
        extra_env=stack_extra_env,
    )
    database = config.database
    bouncer_dir = config.pgbouncer_dir
    stack = Stack(config)
    try:
        stack.prepare_database()
        stack.pgbouncer.start()
        yield stack
    finally:
        stack.stop_all()
        drop_database(cluster, database)
        shutil.rmtree(bouncer_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shop_db(_stack_object: Stack, jwt_keys: TestKeys) -> ShopDatabase:
    return ShopDatabase(_stack_object, jwt_keys)


class RunningStack:
    """What tests see of the running stack."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.pgbouncer = stack.pgbouncer
        self.admin_username = stack.config.superuser.username
        self.admin_email = stack.config.superuser.email
        self.admin_password = stack.config.superuser.password
        self.internal_api_token = stack.config.internal_api_token
        self.redis_url = stack.config.redis_url
        self.redis_key_prefix = stack.config.redis_key_prefix

    def url(self, name: str) -> str:
        return self._stack.url(name)

    def env(self, name: str) -> dict[str, str]:
        return self._stack.env(name)

    def log_path(self, name: str) -> Path:
        return self._stack.log_path(name)

    def pid(self, name: str) -> int | None:
        process = self._stack.processes[name].process
        return process.pid if process is not None and process.poll() is None else None

    def stop(self, name: str) -> None:
        self._stack.stop(name)

    def kill(self, name: str) -> None:
        self._stack.kill(name)

    def start(self, name: str, **extra_env: str) -> None:
        self._stack.start(name, extra_env)

    def restart(self, name: str, **extra_env: str) -> None:
        self._stack.restart(name, extra_env)

    def ensure_running(self) -> None:
        """Bring back anything a previous test stopped (fault tests call this in teardown)."""
        self.pgbouncer.start()
        for name, process in self._stack.processes.items():
            if not process.running:
                self._stack.start(name)


@pytest.fixture(scope="session")
def stack(_stack_object: Stack) -> Iterator[RunningStack]:
    _stack_object.start_all()
    running = RunningStack(_stack_object)
    yield running
    _stack_object.stop_all()


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("gateway"), timeout=30) as client:
        yield client


def wait_until(
    check: Callable[[], Any], *, deadline: float, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll `check` until it returns something truthy; fail the test after `deadline` seconds.
    An AssertionError or a connection error counts as "not yet"."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, httpx.HTTPError) as exc:
            last = exc
        if time.monotonic() > end:
            pytest.fail(f"{what or 'condition'} not reached within {deadline} s (last: {last!r})")
        time.sleep(interval)
