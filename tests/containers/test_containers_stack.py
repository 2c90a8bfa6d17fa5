"""The containerized stack, run with testcontainers where a Docker engine is reachable.

- `docker-compose.yml` itself is started (images built from the Dockerfiles, `up --wait`), and the
  same black-box flow as the local-process tests runs through the published gateway port:
  register, log in, create a category and a product, order, stock goes down, cancel, stock is back.
- PostgreSQL and PgBouncer images with the repository's init script, ini and entry point.

Without a Docker engine (or without the compose v2 plugin for the compose tests) every test here is
skipped with the reason in the summary; `REQUIRE_DOCKER=1` turns that skip into a failure, for
machines that must run them. Nothing else in the suite depends on these tests."""

from __future__ import annotations

import functools
import gc
import os
import secrets
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest

from shop_common.keys import generate_private_key_pem
from shop_dev.stack import free_port

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_IMAGE = "postgres:15-alpine"
PGBOUNCER_IMAGE = "edoburu/pgbouncer:v1.25.2-p0"
ROLES = ("users_svc", "catalog_svc", "orders_svc")


@functools.cache
def docker_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers a ping."""
    if os.environ.get("SKIP_DOCKER_TESTS") == "1":
        return "SKIP_DOCKER_TESTS=1"
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - docker comes with testcontainers
        return f"the docker Python package is missing ({exc})"
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
    version = subprocess.run([cli, "compose", "version"], capture_output=True, check=False)
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
    compose: Any  # testcontainers.compose.DockerCompose
    base_url: str
    admin_username: str
    admin_password: str

    def login(self, api: httpx.Client, username: str, password: str) -> dict[str, str]:
        response = api.post("/auth/token", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


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
    override.write_text(f"secrets:\n  jwt_private_key:\n    file: {key}\n")
    return env_file, override, values


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    require(compose_problem())
    from testcontainers.compose import DockerCompose

    directory = tmp_path_factory.mktemp("compose")
    env_file, override, values = _write_project_files(directory, free_port())
    compose = DockerCompose(
        context=ROOT,
        compose_file_name=["docker-compose.yml", str(override)],
        build=True,
        wait=True,
        env_file=str(env_file),
    )
    with pytest.MonkeyPatch.context() as patch:
        # Its own project: a developer's `docker compose up` in this checkout is left alone.
        patch.setenv("COMPOSE_PROJECT_NAME", f"shoptest{uuid.uuid4().hex[:8]}")
        try:
            compose.start()
        except subprocess.CalledProcessError as exc:
            stdout, stderr = compose.get_logs()
            compose.stop()
            pytest.fail(
                f"docker compose up --build --wait failed:\n{exc.stderr.decode(errors='replace')}\n"
                f"{stdout[-5000:]}{stderr[-5000:]}"
            )
        try:
            host, port = compose.get_service_host_and_port("gateway", 8000)
            host = "127.0.0.1" if host in (None, "", "0.0.0.0") else host  # noqa: S104
            yield ComposeStack(
                compose,
                f"http://{host}:{port}",
                values["FIRST_SUPERUSER_USERNAME"],
                values["FIRST_SUPERUSER_PASSWORD"],
            )
        finally:
            compose.stop()


@pytest.fixture
def api(compose_stack: ComposeStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=compose_stack.base_url, timeout=30) as client:
        yield client


@pytest.mark.compose
def test_gateway_reports_every_upstream_ready(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert sorted(body["checks"]) == ["catalog", "orders", "users"]


@pytest.mark.compose
def test_an_order_takes_stock_and_cancelling_it_gives_the_stock_back(
    compose_stack: ComposeStack, api: httpx.Client
) -> None:
    suffix = uuid.uuid4().hex[:10]
    registered = api.post(
        "/users/",
        json={
            "username": f"buyer{suffix}",
            "email": f"buyer{suffix}@example.com",
            "password": "containers-password-1",
        },
    )
    assert registered.status_code == 201, registered.text
    buyer = compose_stack.login(api, f"buyer{suffix}", "containers-password-1")
    admin = compose_stack.login(api, compose_stack.admin_username, compose_stack.admin_password)

    category = api.post("/categories/", json={"name": f"Crates {suffix}"}, headers=admin)
    assert category.status_code == 201, category.text
    product = api.post(
        "/products/",
        json={
            "name": f"Crate {suffix}",
            "sku": f"CRATE-{suffix.upper()}",
            "price": "19.99",
            "stock_quantity": 5,
            "category_id": category.json()["id"],
        },
        headers=admin,
    )
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]

    order = api.post(
        "/orders/", json={"items": [{"product_id": product_id, "quantity": 2}]}, headers=buyer
    )
    assert order.status_code == 201, order.text
    placed = order.json()
    assert placed["status"] == "pending"
    assert placed["user_id"] == registered.json()["id"]
    assert placed["total_amount"] == "39.98"
    assert [(i["product_id"], i["quantity"], i["unit_price"]) for i in placed["items"]] == [
        (product_id, 2, "19.99")
    ]
    assert api.get(f"/products/{product_id}").json()["stock_quantity"] == 3

    cancelled = api.patch(
        f"/orders/{placed['id']}/status", params={"new_status": "cancelled"}, headers=buyer
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert api.get(f"/products/{product_id}").json()["stock_quantity"] == 5


@pytest.mark.compose
def test_only_the_gateway_publishes_a_port(compose_stack: ComposeStack) -> None:
    published = {
        c.Service: sorted({p.PublishedPort for p in c.Publishers if p.PublishedPort})
        for c in compose_stack.compose.get_containers(include_all=True)
    }
    gateway_port = int(compose_stack.base_url.rsplit(":", 1)[1])
    assert published.pop("gateway") == [gateway_port]
    assert {service: ports for service, ports in published.items() if ports} == {}


@pytest.mark.compose
def test_migration_jobs_completed_and_services_run_unprivileged(
    compose_stack: ComposeStack,
) -> None:
    containers = {c.Service: c for c in compose_stack.compose.get_containers(include_all=True)}
    for svc in ("users", "catalog", "orders"):
        job = containers[f"migrate-{svc}"]
        assert (job.State, job.ExitCode) == ("exited", 0)
        stdout, _, code = compose_stack.compose.exec_in_container(["id", "-u"], service_name=svc)
        assert (code, stdout.strip()) == (0, "10001")


# ---- PostgreSQL + PgBouncer images with the repository's bootstrap --------------------------------


def test_pgbouncer_image_logs_every_role_in_with_the_repository_entrypoint() -> None:
    require(docker_problem())
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    passwords = {
        "USERS_DB_PASSWORD": secrets.token_urlsafe(16),
        "CATALOG_DB_PASSWORD": secrets.token_urlsafe(16),
        "ORDERS_DB_PASSWORD": secrets.token_urlsafe(16),
    }
    postgres = (
        PostgresContainer(POSTGRES_IMAGE, username="postgres", password="pw", dbname="shop")
        .with_volume_mapping(str(ROOT / "deploy/postgres/initdb"), "/docker-entrypoint-initdb.d")
        .with_volume_mapping(str(ROOT / "deploy/postgres/roles.sql"), "/opt/shop/roles.sql")
        .with_envs(**passwords)
    )
    bouncer = (
        DockerContainer(PGBOUNCER_IMAGE)
        .with_kwargs(entrypoint=["/bin/sh", "/opt/shop/docker-entrypoint.sh"])
        .with_volume_mapping(
            str(ROOT / "deploy/pgbouncer/pgbouncer.ini"), "/etc/pgbouncer/pgbouncer.ini"
        )
        .with_volume_mapping(
            str(ROOT / "deploy/pgbouncer/docker-entrypoint.sh"), "/opt/shop/docker-entrypoint.sh"
        )
        .with_envs(**passwords)
        .with_exposed_ports(6432)
        .waiting_for(LogMessageWaitStrategy("process up"))
    )
    with Network() as network:
        postgres.with_network(network).with_network_aliases("postgres")
        bouncer.with_network(network)
        with postgres, bouncer:
            host, port = bouncer.get_container_host_ip(), bouncer.get_exposed_port(6432)
            for role in ROLES:
                variable = f"{role.removesuffix('_svc').upper()}_DB_PASSWORD"
                with (
                    closing(
                        psycopg2.connect(
                            host=host,
                            port=port,
                            user=role,
                            password=passwords[variable],
                            dbname="shop",
                        )
                    ) as conn,
                    conn.cursor() as cur,
                ):
                    cur.execute("SELECT current_user, current_setting('statement_timeout')")
                    assert cur.fetchone() == (role, "5s")
