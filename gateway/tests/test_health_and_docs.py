"""The gateway's own endpoints: aggregated health, merged OpenAPI, Swagger UI, metrics."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from openapi_spec_validator import validate

from shop_dev.processes import free_port

if TYPE_CHECKING:
    from conftest import GatewayFactory, Process


def test_live_is_200(client: httpx.Client) -> None:
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "gateway"}


def test_health_reports_each_upstream_with_latency(client: httpx.Client) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert sorted(body["checks"]) == ["catalog", "orders", "users"]
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["http_status"] == 200
        assert check["latency_ms"] >= 0


@pytest.fixture(scope="module")
def gateway_with_orders_down(start_gateway: GatewayFactory, refused_url: str) -> Process:
    return start_gateway(orders_url=refused_url, health_timeout_seconds="0.5")


def test_health_is_503_when_an_upstream_is_down(gateway_with_orders_down: Process) -> None:
    response = httpx.get(gateway_with_orders_down.url + "/health")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"]["orders"]["status"] == "down"
    assert body["checks"]["orders"]["error"] == "unreachable"
    assert body["checks"]["users"]["status"] == "ok"
    assert body["detail"] == "upstream(s) not ready: orders"


def test_metrics_are_served_on_their_own_port_only(start_gateway: GatewayFactory) -> None:
    metrics_port = free_port()
    gateway = start_gateway(metrics_port=str(metrics_port))
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.get("/products/1")
        public = client.get("/metrics")
    response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)

    assert public.status_code == 404
    assert public.headers["content-type"] == "application/problem+json"
    assert response.status_code == 200
    assert (
        'shop_http_requests_total{method="GET",route="catalog",service="gateway",status="200"}'
        in response.text
    )


@pytest.fixture(scope="module")
def spec(client_module: httpx.Client) -> dict[str, Any]:
    response = client_module.get("/openapi.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture(scope="module")
def client_module(gateway: Process) -> Any:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


def test_merged_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)


def test_merged_spec_has_the_public_paths_of_every_upstream(spec: dict[str, Any]) -> None:
    assert sorted(spec["paths"]) == [
        "/.well-known/jwks.json",
        "/orders/{order_id}",
        "/products/{product_id}",
        "/users/",
    ]


def test_merged_spec_keeps_out_internal_health_and_misrouted_paths(spec: dict[str, Any]) -> None:
    paths = " ".join(spec["paths"])
    assert "internal" not in paths
    assert "/health" not in paths
    assert (
        "/products/shadow" not in paths
    )  # orders serves it, but the gateway routes /products to catalog
    assert "ReservationCreate" not in spec["components"]["schemas"]  # only an internal path used it


def test_conflicting_component_names_get_prefixed_and_refs_follow(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]

    assert "Summary" not in schemas
    assert {"catalog_Summary", "orders_Summary"} <= set(schemas)
    assert schemas["ProductSummary"]["properties"]["summary"] == {
        "$ref": "#/components/schemas/catalog_Summary"
    }
    assert schemas["OrderSummary"]["properties"]["summary"] == {
        "$ref": "#/components/schemas/orders_Summary"
    }
    assert "HTTPValidationError" in schemas  # identical in every upstream: shared once


def test_docs_serve_swagger_ui_for_the_merged_spec(client: httpx.Client) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_gateway_only(
    client: httpx.Client, page: str
) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert re.findall(r"https?://", response.text) == []  # no CDN
    csp = response.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline';" in csp
    assert "default-src 'none'" in csp
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', response.text):
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000


def test_an_unknown_docs_asset_is_404(client: httpx.Client) -> None:
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404
    assert client.get("/docs/assets/other.js").status_code == 404


def test_spec_survives_a_missing_upstream(gateway_with_orders_down: Process) -> None:
    response = httpx.get(gateway_with_orders_down.url + "/openapi.json")

    assert response.status_code == 200
    assert response.json()["info"]["x-missing-upstreams"] == ["orders"]
    assert "/orders/{order_id}" not in response.json()["paths"]
    validate(response.json())
