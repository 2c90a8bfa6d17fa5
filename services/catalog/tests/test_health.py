"""Health endpoints of the catalog app on the test database (through PgBouncer)."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_ready_when_the_database_is_reachable_and_migrations_are_at_head(
    anon: TestClient,
) -> None:
    response = anon.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["service"]) == ("ok", "catalog")
    assert body["checks"]["migrations"]["status"] == "ok"


def test_live(anon: TestClient) -> None:
    assert anon.get("/health/live").json() == {"status": "ok", "service": "catalog"}


def test_openapi_operation_ids_are_prefixed_and_unique(anon: TestClient) -> None:
    spec = anon.get("/openapi.json").json()
    operation_ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]

    assert len(operation_ids) == len(set(operation_ids))
    assert all(o.startswith("catalog-") for o in operation_ids)
    assert "catalog-create_reservation" in operation_ids
