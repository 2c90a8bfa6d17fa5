"""The whole stack from the repository's own docker-compose.yml (`up --build --wait`), used the way
the README says: through the one published port, the gateway's."""

from __future__ import annotations

import json
import socket
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import psycopg2
import pytest

if TYPE_CHECKING:
    from containers.conftest import ComposeStack

pytestmark = [pytest.mark.docker, pytest.mark.compose]

APP_SERVICES = ("users", "catalog", "orders", "gateway")
DB_SERVICES = ("users", "catalog", "orders")
APP_PORTS = {"users": 8001, "catalog": 8002, "orders": 8003, "gateway": 8000}


def test_health_reports_every_upstream_ready(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert sorted(body["checks"]) == ["catalog", "orders", "users"]
    assert {check["status"] for check in body["checks"].values()} == {"ok"}


def test_docs_and_the_merged_openapi_are_served(api: httpx.Client) -> None:
    docs = api.get("/docs")
    spec = api.get("/openapi.json")

    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    # One route of each upstream, merged into the gateway's document; nothing internal leaks.
    for path in ("/users/", "/auth/token", "/products/", "/orders/"):
        assert path in paths, sorted(paths)
    assert not [p for p in paths if p.startswith("/internal")]


def test_readme_walkthrough_through_the_gateway(
    compose_stack: ComposeStack, api: httpx.Client
) -> None:
    """README "Using the API": register, log in, the admin creates a product, order, stock goes
    down, cancel gives it back, the admin's stats count the order."""
    suffix = uuid.uuid4().hex[:10]
    password = "correct horse battery"
    registered = api.post(
        "/users/",
        json={
            "username": f"alice{suffix}",
            "email": f"alice{suffix}@example.com",
            "password": password,
        },
    )
    assert registered.status_code == 201, registered.text
    buyer = compose_stack.login(api, f"alice{suffix}", password)
    me = api.get("/users/me", headers=buyer)
    assert (me.status_code, me.json()["username"]) == (200, f"alice{suffix}")

    admin = compose_stack.login(api, compose_stack.admin_username, compose_stack.admin_password)
    categories = api.get("/categories/")
    assert categories.status_code == 200, categories.text
    assert len(_items(categories.json())) >= 4  # the default categories of the seed migration
    product = api.post(
        "/products/",
        json={
            "name": f"Espresso cup {suffix}",
            "sku": f"CUP-{suffix.upper()}",
            "price": "12.50",
            "stock_quantity": 10,
            "category_id": _items(categories.json())[0]["id"],
            "tags": ["kitchen"],
        },
        headers=admin,
    )
    assert product.status_code == 201, product.text
    product_id = product.json()["id"]
    found = api.get("/products/", params={"q": f"espresso {suffix}", "sort": "price"})
    assert [p["id"] for p in _items(found.json())] == [product_id]

    order = api.post(
        "/orders/",
        json={"items": [{"product_id": product_id, "quantity": 2}]},
        headers={**buyer, "Idempotency-Key": f"walkthrough-{suffix}"},
    )
    assert order.status_code == 201, order.text
    placed = order.json()
    assert (placed["status"], placed["total_amount"]) == ("pending", "25.00")
    assert placed["user_id"] == registered.json()["id"]
    assert api.get(f"/products/{product_id}").json()["stock_quantity"] == 8

    cancelled = api.patch(
        f"/orders/{placed['id']}/status", params={"new_status": "cancelled"}, headers=buyer
    )
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled"), cancelled.text
    assert api.get(f"/products/{product_id}").json()["stock_quantity"] == 10

    stats = api.get("/orders/stats/summary", headers=admin)
    assert stats.status_code == 200, stats.text
    assert stats.json()  # the shape is the orders service's own test; here: served through it
    assert api.get("/orders/stats/summary", headers=buyer).status_code == 403


def _items(body: Any) -> list[dict[str, Any]]:
    """A page's items ({"items": [...]}) or a plain list."""
    return list(body["items"] if isinstance(body, dict) else body)


def test_only_the_gateway_publishes_a_port(compose_stack: ComposeStack) -> None:
    published = {
        c["Service"]: sorted(
            {p["PublishedPort"] for p in c.get("Publishers") or [] if p["PublishedPort"]}
        )
        for c in compose_stack.containers()
    }
    assert published.pop("gateway") == [compose_stack.gateway_port]
    assert {service: ports for service, ports in published.items() if ports} == {}


def _answers(service: str, address: str, port: int, stack: ComposeStack) -> bool:
    """Whether the host gets a real answer from `service` at address:port, in its own protocol.
    (A TCP connect alone proves nothing on a machine whose default route is a transparent proxy.)"""
    try:
        if service in ("postgres", "pgbouncer"):
            user, password = (
                ("postgres", stack.values["POSTGRES_PASSWORD"])
                if service == "postgres"
                else ("users_svc", stack.values["USERS_DB_PASSWORD"])
            )
            psycopg2.connect(
                host=address,
                port=port,
                user=user,
                password=password,
                dbname="shop",
                connect_timeout=3,
            ).close()
            return True
        if service == "redis":
            with socket.create_connection((address, port), timeout=3) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        response = httpx.get(f"http://{address}:{port}/health/live", timeout=3)
        return response.status_code == 200 and response.json().get("service") == service
    except (OSError, ValueError, httpx.HTTPError, psycopg2.Error):
        return False


@pytest.mark.parametrize(
    ("service", "port"),
    [
        *((s, APP_PORTS[s]) for s in DB_SERVICES),
        ("pgbouncer", 6432),
        ("postgres", 5432),
        ("redis", 6379),
    ],
)
def test_the_host_cannot_reach_a_backend_service(
    compose_stack: ComposeStack, service: str, port: int
) -> None:
    """Neither through a published port nor at the container's own address on the internal network
    (the backend bridge has no address on the host: inhibit_ipv4 in docker-compose.yml)."""
    info = compose_stack.inspect(service)
    assert not (info["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
    addresses = [
        n["IPAddress"] for n in info["NetworkSettings"]["Networks"].values() if n["IPAddress"]
    ]
    assert addresses
    for address in addresses:
        assert not _answers(service, address, port, compose_stack), f"{service} at {address}:{port}"


def test_the_probe_gets_answers_where_it_should(compose_stack: ComposeStack) -> None:
    """The control for the test above: the same probe reaches the published gateway, and a
    service from inside the backend network."""
    assert _answers("gateway", "127.0.0.1", compose_stack.gateway_port, compose_stack)
    inside = compose_stack.run(
        "exec", "-T", "gateway", "python", "-c",
        "import urllib.request; print(urllib.request.urlopen('http://users:8001/health/live', timeout=3).read().decode())",
    )  # fmt: skip
    assert json.loads(inside)["service"] == "users"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_every_service_container_runs_as_an_unprivileged_user(
    compose_stack: ComposeStack, service: str
) -> None:
    info = compose_stack.inspect(service)
    assert info["Config"]["User"] == "10001:10001"
    uid = compose_stack.run("exec", "-T", service, "id", "-u").strip()
    assert uid == "10001"
    # PID 1 is the server itself (shop_common.server running uvicorn; it gets SIGTERM), owned by
    # that user.
    status = compose_stack.run("exec", "-T", service, "cat", "/proc/1/status")
    assert "\nUid:\t10001\t" in status
    cmdline = compose_stack.run("exec", "-T", service, "cat", "/proc/1/cmdline")
    assert "shop_common.server" in cmdline


def _alembic_rows(compose_stack: ComposeStack, service: str) -> list[list[str]]:
    """The version row and its xmin: Alembic updates the row for every migration it applies, so
    an unchanged xmin means the job applied nothing."""
    return compose_stack.psql(f"SELECT version_num, xmin FROM {service}.alembic_version")


def test_migrations_ran_once_and_a_second_up_changes_nothing(compose_stack: ComposeStack) -> None:
    long_running = ("postgres", "pgbouncer", "redis", *APP_SERVICES)
    before = {s: compose_stack.inspect(s)["State"]["StartedAt"] for s in long_running}
    ids = {s: compose_stack.container_id(s) for s in long_running}
    jobs = {svc: compose_stack.inspect(f"migrate-{svc}")["State"] for svc in DB_SERVICES}
    rows = {svc: _alembic_rows(compose_stack, svc) for svc in DB_SERVICES}
    for svc in DB_SERVICES:
        assert (jobs[svc]["Status"], jobs[svc]["ExitCode"]) == ("exited", 0)
        assert len(rows[svc]) == 1, rows[svc]  # at head: /health checked every service's migrations

    compose_stack.run("up", "--wait", "--no-build", timeout=300)

    for svc in DB_SERVICES:
        job = compose_stack.inspect(f"migrate-{svc}")["State"]
        # Whether compose started the exited job again or not, it succeeded and applied nothing.
        assert (job["Status"], job["ExitCode"]) == ("exited", 0)
        assert _alembic_rows(compose_stack, svc) == rows[svc]
    # Nothing long-running was recreated or restarted.
    assert {s: compose_stack.container_id(s) for s in long_running} == ids
    assert {s: compose_stack.inspect(s)["State"]["StartedAt"] for s in long_running} == before


IMAGE_CHECK = """
import importlib.util, json, pathlib, sys
svc = sys.argv[1]
root = pathlib.Path("/app")
print(json.dumps({
    "dev_modules": [m for m in ("pytest", "mypy", "ruff", "testcontainers", "shop_dev", "watchfiles")
                    if importlib.util.find_spec(m) is not None],
    "migrations": len(list((root / "services" / svc / "migrations" / "versions").glob("*.py"))),
    "alembic_ini": (root / "services" / svc / "alembic.ini").is_file(),
    "tests": [str(p) for p in root.rglob("tests") if p.is_dir() and ".venv" not in p.parts],
    "secrets": [str(p) for p in root.rglob("*") if ".venv" not in p.parts
                and (p.name.endswith(".pem") or p.name.startswith(".env"))],
    "writable": __import__("os").access("/app", __import__("os").W_OK),
}))
"""


@pytest.mark.parametrize("service", DB_SERVICES)
def test_the_image_holds_the_service_and_its_migrations_but_no_tests_dev_tools_or_secrets(
    compose_stack: ComposeStack, service: str
) -> None:
    out = compose_stack.run("exec", "-T", service, "python", "-c", IMAGE_CHECK, service)
    found = json.loads(out)
    assert found["dev_modules"] == []
    assert found["migrations"] >= 1
    assert found["alembic_ini"] is True
    assert found["tests"] == []
    assert found["secrets"] == []
    assert (
        found["writable"] is False
    )  # the code belongs to root; the service's user can't change it
