"""The container tests: a real Docker engine, the repository's compose file and images, testcontainers.

Run them with `make containers` (it starts an engine when none is reachable, builds the air-gapped
stand-in base images when no registry is reachable, and sets REQUIRE_DOCKER=1). Without an engine
every test here is skipped with the reason in the summary; REQUIRE_DOCKER=1 turns that skip into a
failure, so CI can't pass with them silently skipped.

Testcontainers' reaper (Ryuk) is an image pulled from a registry: it is disabled here and every
fixture cleans up after itself (`compose down -v`, containers and networks removed on exit)."""

from __future__ import annotations

import functools
import gc
import json
import os
import secrets
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop_common.keys import generate_private_key_pem
from shop_dev.stack import free_port
from shop_dev.testing import wait_until

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP_SERVICES = ("users", "catalog", "orders", "gateway")
DB_SERVICES = ("users", "catalog", "orders")
APP_PORTS = {"users": 8001, "catalog": 8002, "orders": 8003, "gateway": 8000}
# Per test, fixtures included: the first one pays for `up --build` (a cold build of four images on a
# loaded 2-core machine) or a PostgreSQL container's start.
TEST_DEADLINE_SECONDS = 1200


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.timeout(TEST_DEADLINE_SECONDS))


@functools.cache
def docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers a ping."""
    if os.environ.get("SKIP_DOCKER_TESTS") == "1":
        return "SKIP_DOCKER_TESTS=1"
    import docker  # type: ignore[import-untyped]

    with warnings.catch_warnings():
        # A failed probe leaves docker-py's socket to the garbage collector: not our leak.
        warnings.simplefilter("ignore", ResourceWarning)
        client = None
        try:
            client = docker.from_env(timeout=3)
            client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means no usable engine
            return f"Docker engine not reachable ({type(exc).__name__}: {exc})"
        finally:
            if client is not None:
                client.close()
            gc.collect()
    return None


@functools.cache
def compose_problem() -> str | None:
    problem = docker_problem()
    if problem:
        return problem
    cli = shutil.which("docker")
    if cli is None:
        return "the docker CLI is not installed"
    version = subprocess.run(
        [cli, "compose", "version"], capture_output=True, check=False, timeout=30
    )
    if version.returncode != 0:
        return "the docker compose v2 plugin is not installed (`docker compose version` failed)"
    return None


def require(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but {problem}")
    pytest.skip(f"{problem}; REQUIRE_DOCKER=1 makes this a failure")


# ---- the compose project --------------------------------------------------------------------------


@dataclass
class ComposeStack:
    """The repository's docker-compose.yml, up under its own project name with fresh secrets."""

    command: list[str]  # `docker compose` with this project's files and env file
    project: str
    base_url: str
    gateway_port: int
    values: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def admin_username(self) -> str:
        return self.values["FIRST_SUPERUSER_USERNAME"]

    @property
    def admin_password(self) -> str:
        return self.values["FIRST_SUPERUSER_PASSWORD"]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """`docker compose <args>` for this project; its stdout."""
        result = subprocess.run(
            [*self.command, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def containers(self) -> list[dict[str, Any]]:
        """`docker compose ps --all` as dicts (Service, State, ExitCode, Publishers, ...)."""
        out = self.run("ps", "--all", "--format", "json")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [row for group in rows for row in (group if isinstance(group, list) else [group])]

    def container_id(self, service: str) -> str:
        ids = self.run("ps", "--all", "-q", service).split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        [info] = json.loads(docker("inspect", self.container_id(service)))
        assert isinstance(info, dict)
        return info

    def psql(self, sql: str) -> list[list[str]]:
        """Run SQL as the PostgreSQL superuser inside the postgres container (not published)."""
        out = self.run(
            "exec", "-T", "postgres",
            "psql", "-U", "postgres", "-d", "shop", "-v", "ON_ERROR_STOP=1", "-AtF", "\t", "-c", sql,
        )  # fmt: skip
        return [line.split("\t") for line in out.splitlines() if line]

    def login(self, api: httpx.Client, username: str, password: str) -> dict[str, str]:
        response = api.post("/auth/token", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def docker_cli(self, *args: str, timeout: float = 120) -> str:
        return docker(*args, timeout=timeout)

    @staticmethod
    def until(
        check: Callable[[], Any], *, deadline: float, interval: float = 0.5, what: str = ""
    ) -> Any:
        return wait_until(check, deadline=deadline, interval=interval, what=what)

    def wait_healthy(self, service: str, deadline: float = 180) -> None:
        def healthy() -> bool:
            state = self.inspect(service)["State"]
            return bool(state.get("Running")) and state.get("Health", {}).get("Status") == "healthy"

        wait_until(healthy, deadline=deadline, interval=1, what=f"{service} healthy")


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


# Test-only settings on top of the repository's compose file: a fresh signing key, and a short
# recovery period for orders so the fault tests see the recovery job resolve within seconds.
OVERRIDE = """\
secrets:
  jwt_private_key:
    file: {key}
services:
  orders:
    environment:
      RECOVERY_INTERVAL_SECONDS: "1"
"""


def _write_project_files(directory: Path, gateway_port: int) -> tuple[Path, Path, dict[str, str]]:
    """An env file with fresh secrets (production mode, so placeholders would be refused) and an
    override that points the signing-key secret at a fresh key: the developer's own .env and key
    are never read or touched."""
    key = directory / "jwt_private_key.pem"
    key.write_bytes(generate_private_key_pem())
    key.chmod(0o644)  # bind-mounted as a compose secret: the container's uid 10001 reads it
    values = {
        "ENVIRONMENT": "production",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "USERS_DB_PASSWORD": secrets.token_urlsafe(24),
        "CATALOG_DB_PASSWORD": secrets.token_urlsafe(24),
        "ORDERS_DB_PASSWORD": secrets.token_urlsafe(24),
        "INTERNAL_API_TOKEN": secrets.token_urlsafe(32),
        "FIRST_SUPERUSER_USERNAME": "admin",
        "FIRST_SUPERUSER_EMAIL": "admin@example.com",
        "FIRST_SUPERUSER_PASSWORD": secrets.token_urlsafe(24),
        "GATEWAY_PORT": str(gateway_port),
        "LOG_JSON": "true",
    }
    env_file = directory / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    override = directory / "docker-compose.test.yml"
    override.write_text(OVERRIDE.format(key=key))
    return env_file, override, values


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A reachable engine, or a skip (a failure with REQUIRE_DOCKER=1)."""
    require(docker_problem())


@pytest.fixture(scope="session")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """`docker compose up --build --wait` of the repository's compose file, once per session,
    started and stopped through testcontainers' DockerCompose; `down --volumes` at the end."""
    require(compose_problem())
    from testcontainers.compose import DockerCompose

    directory = tmp_path_factory.mktemp("compose")
    gateway_port = free_port()
    env_file, override, values = _write_project_files(directory, gateway_port)
    project = f"shoptest{uuid.uuid4().hex[:8]}"
    compose = DockerCompose(
        context=ROOT,
        compose_file_name=["docker-compose.yml", str(override)],
        build=True,
        wait=True,
        env_file=str(env_file),
    )
    stack = ComposeStack(
        list(compose.compose_command_property),
        project,
        f"http://127.0.0.1:{gateway_port}",
        gateway_port,
        values,
        {**os.environ, "COMPOSE_PROJECT_NAME": project},
    )
    with pytest.MonkeyPatch.context() as patch:
        # Its own project: a developer's `docker compose up` in this checkout is left alone.
        patch.setenv("COMPOSE_PROJECT_NAME", project)
        try:
            try:
                compose.start()  # up --build --wait
            except subprocess.CalledProcessError as exc:
                logs = stack.run("logs", "--no-color", "--tail", "40", check=False)
                pytest.fail(
                    f"docker compose up --build --wait failed:\n"
                    f"{(exc.stderr or b'').decode(errors='replace')[-6000:]}\n{logs[-8000:]}"
                )
            yield stack
        finally:
            stack.run("down", "--volumes", "--remove-orphans", "-t", "5", timeout=300, check=False)


@pytest.fixture
def api(compose_stack: ComposeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=compose_stack.base_url, timeout=30) as client:
        yield client
