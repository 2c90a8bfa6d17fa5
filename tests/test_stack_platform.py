"""The walking skeleton, as a user meets it: four processes, PgBouncer, PostgreSQL, over HTTP."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import psycopg2
import pytest
from sqlalchemy import make_url

from shop_dev.testing import RunningStack

pytestmark = pytest.mark.stack

SERVICES = ("users", "catalog", "orders")


def _ready(stack: RunningStack, name: str) -> httpx.Response:
    return httpx.get(f"{stack.url(name)}/health/ready", timeout=10)


def test_gateway_health_reports_every_upstream_ready(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert sorted(body["checks"]) == ["catalog", "orders", "users"]
    assert all(check["status"] == "ok" for check in body["checks"].values())


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_ready_with_migrations_at_head(stack: RunningStack, service: str) -> None:
    response = _ready(stack, service)

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["migrations"]["status"] == "ok"
    assert checks["migrations"]["current"] == checks["migrations"]["expected"] != []


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_logs_in_through_pgbouncers_unix_socket(
    stack: RunningStack, service: str
) -> None:
    url = make_url(stack.env(service)["DATABASE_URL"])
    socket_dir, port = url.query["host"], url.query["port"]
    assert isinstance(socket_dir, str)
    assert isinstance(port, str)

    assert url.host is None  # no TCP address: libpq takes `host` as the socket's directory
    assert (Path(socket_dir) / f".s.PGSQL.{port}").is_socket()
    connection = psycopg2.connect(
        host=socket_dir, port=port, user=url.username, password=url.password, dbname=url.database
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (f"{service}_svc",)
    finally:
        connection.close()


def test_losing_pgbouncer_makes_services_unready_and_they_recover_without_restart(
    stack: RunningStack, api: httpx.Client
) -> None:
    pids_before = {name: stack.pid(name) for name in SERVICES}
    stack.pgbouncer.stop()
    try:
        down = {name: _ready(stack, name) for name in SERVICES}
        gateway_down = api.get("/health")
    finally:
        stack.pgbouncer.start()

    for name, response in down.items():
        assert response.status_code == 503, name
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["checks"]["database"]["status"] == "down"
    assert gateway_down.status_code == 503
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        _ready(stack, n).status_code != 200 for n in SERVICES
    ):
        time.sleep(0.2)
    assert {name: _ready(stack, name).status_code for name in SERVICES} == dict.fromkeys(
        SERVICES, 200
    )
    pids_after = {name: stack.pid(name) for name in SERVICES}
    assert pids_after == pids_before


def test_request_id_from_the_client_reaches_the_upstream_log_and_comes_back(
    stack: RunningStack, api: httpx.Client
) -> None:
    request_id = f"trace-{uuid.uuid4().hex}"

    response = api.get("/products/", headers={"X-Request-ID": request_id})

    assert response.headers["x-request-id"] == request_id
    deadline = time.monotonic() + 5
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline and not found:
        lines = stack.log_path("catalog").read_text().splitlines()
        found = [
            entry
            for entry in (json.loads(line) for line in lines if line.startswith("{"))
            if entry.get("request_id") == request_id
        ]
        time.sleep(0.1)
    assert found, "the catalog service did not log the gateway's request id"
    assert found[-1]["status"] == 200


def test_gateway_generates_a_request_id_when_the_client_sends_none(api: httpx.Client) -> None:
    response = api.get("/products/")

    assert len(response.headers["x-request-id"]) >= 16


@pytest.mark.parametrize("path", ["/internal/users?ids=1", "/%69nternal/reservations", "/nowhere"])
def test_internal_and_unknown_paths_are_404_problems_at_the_gateway(
    api: httpx.Client, path: str
) -> None:
    response = api.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
