"""Readiness reflects the database and the migrations; request ids go in and out; metrics exist."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from shop_dev.testing import ShopDatabase

ClientFactory = Callable[..., TestClient]
SCRATCH_SCHEMA = "common_scratch"


def test_live_and_ready_answer_200_when_database_and_migrations_are_fine(
    client_for: ClientFactory,
) -> None:
    client = client_for()

    live = client.get("/health/live")
    ready = client.get("/health/ready")

    assert live.status_code == 200
    assert live.json() == {"status": "ok", "service": "scratch"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["migrations"] == {
        "status": "ok",
        "current": ["0001"],
        "expected": ["0001"],
    }
    assert client.get("/health").json()["status"] == "ok"


def test_ready_is_503_problem_when_the_database_is_unreachable(
    client_for: ClientFactory, shop_db: ShopDatabase
) -> None:
    client = client_for(database_url="postgresql+psycopg2://nobody:x@127.0.0.1:1/none")

    response = client.get("/health/ready")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["checks"]["database"]["status"] == "down"
    assert client.get("/health/live").status_code == 200


def test_ready_is_503_when_migrations_are_behind(
    client_for: ClientFactory, scratch_db: str
) -> None:
    engine = create_engine(scratch_db)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {SCRATCH_SCHEMA}.alembic_version SET version_num = '0000'"))
    try:
        response = client_for().get("/health/ready")
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {SCRATCH_SCHEMA}.alembic_version SET version_num = '0001'"))
        engine.dispose()

    assert response.status_code == 503
    assert response.json()["checks"]["migrations"]["status"] == "pending"


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(
    client_for: ClientFactory,
) -> None:
    client = client_for()

    kept = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    replaced = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    generated = client.get("/health/live")

    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    assert len(generated.headers["x-request-id"]) == 32


def test_access_log_line_is_json_with_the_request_id(
    client_for: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = client_for(log_json=True)

    client.get("/health/live", headers={"X-Request-ID": "log-check-1"})

    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    access = [e for e in lines if e["logger"] == "shop.access" and e["request_id"] == "log-check-1"]
    assert access, lines
    assert access[0]["status"] == 200
    assert access[0]["route"] == "/health/live"
    logging.getLogger().handlers.clear()


def test_metrics_are_exposed_in_prometheus_format(client_for: ClientFactory) -> None:
    client = client_for()
    client.get("/health/live")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert (
        'shop_http_requests_total{method="GET",route="/health/live",service="scratch",status="200"}'
        in response.text
    )


def test_ready_is_503_within_two_seconds_when_the_database_never_answers(
    client_for: ClientFactory, shop_db: ShopDatabase
) -> None:
    """A dead PostgreSQL behind PgBouncer: the connection is accepted and then nothing comes
    back. A listening socket that never accepts is that database (the kernel completes the
    handshake); libpq's own connect timeout is 5 s."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = client_for(database_url=f"postgresql+psycopg2://nobody:x@127.0.0.1:{port}/none")

        started = time.monotonic()
        response = client.get("/health/ready")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"status": "down", "error": "timeout"}
    assert elapsed < 4.5  # the 1.5 s deadline with room for a busy machine; before: 5 s
