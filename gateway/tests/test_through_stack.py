"""The gateway in front of the real services (the `stack` fixture: PostgreSQL, PgBouncer, users,
catalog, orders and the gateway as processes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from shop_dev.testing import RunningStack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> Iterator[httpx.Client]:
    """A client of the gateway logged in as the first superuser (one login for the module)."""
    with httpx.Client(base_url=stack.url("gateway"), timeout=30) as client:
        token = client.post(
            "/auth/token",
            data={"username": stack.admin_username, "password": stack.admin_password},
        )
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def _new_product(admin: httpx.Client) -> dict[str, Any]:
    sku = f"GW-{uuid.uuid4().hex[:10].upper()}"
    response = admin.post(
        "/products/",
        json={"name": f"Gateway {sku}", "sku": sku, "price": "3.50", "stock_quantity": 5},
    )
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


def _logged(stack: RunningStack, name: str, needle: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if needle in stack.log_path(name).read_text():
            return True
        time.sleep(0.1)
    return False


def test_each_prefix_reaches_the_real_service(stack: RunningStack, admin: httpx.Client) -> None:
    product = _new_product(admin)

    me = admin.get("/users/me")
    fetched = admin.get(f"/products/{product['id']}")
    jwks = admin.get("/.well-known/jwks.json")
    orders = admin.get("/orders/")
    tags = admin.get("/tags/")

    assert me.json()["username"] == stack.admin_username
    assert fetched.json()["sku"] == product["sku"]
    assert jwks.json()["keys"][0]["alg"] == "EdDSA"
    assert orders.status_code == 200
    assert {"items", "total", "page"} <= set(orders.json())
    assert tags.status_code == 200


def test_internal_endpoints_stay_unreachable_even_with_the_service_token(
    stack: RunningStack, admin: httpx.Client
) -> None:
    token = {"X-Service-Token": stack.internal_api_token}

    via_gateway = admin.get("/internal/users", params={"ids": "1"}, headers=token)
    direct = httpx.get(f"{stack.url('users')}/internal/users", params={"ids": "1"}, headers=token)

    assert direct.status_code == 200  # the endpoint exists...
    assert via_gateway.status_code == 404  # ...but not through the front door
    assert via_gateway.headers["content-type"] == "application/problem+json"


def test_order_placement_carries_the_request_id_into_the_orders_log(
    stack: RunningStack, admin: httpx.Client
) -> None:
    product = _new_product(admin)
    request_id = f"gw-order-{uuid.uuid4().hex}"

    response = admin.post(
        "/orders/",
        json={"items": [{"product_id": product["id"], "quantity": 1}]},
        headers={"X-Request-ID": request_id},
    )

    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == request_id
    assert _logged(stack, "orders", request_id)


def test_post_after_the_upstream_keepalive_expired_is_not_a_502(admin: httpx.Client) -> None:
    _new_product(admin)
    time.sleep(5.5)  # longer than uvicorn's 5 s keep-alive: the pooled connection is gone

    _new_product(admin)  # a POST is never retried, so it must not land on a dead connection


def test_catalog_restart_is_invisible_to_idempotent_requests(
    stack: RunningStack, admin: httpx.Client
) -> None:
    product = _new_product(admin)
    assert admin.get(f"/products/{product['id']}").status_code == 200
    try:
        stack.restart("catalog")

        after = admin.get(f"/products/{product['id']}")
    finally:
        stack.ensure_running()

    assert after.status_code == 200


def test_stopped_catalog_is_502_and_comes_back(stack: RunningStack, admin: httpx.Client) -> None:
    product = _new_product(admin)
    try:
        stack.stop("catalog")
        down = admin.get(f"/products/{product['id']}")
    finally:
        stack.ensure_running()
    back = admin.get(f"/products/{product['id']}")

    assert down.status_code == 502
    assert down.json()["upstream"] == "catalog"
    assert back.status_code == 200


def test_merged_spec_of_the_real_services_is_valid_and_public(admin: httpx.Client) -> None:
    spec = admin.get("/openapi.json").json()

    validate(spec)
    paths = set(spec["paths"])
    assert {"/auth/token", "/users/me", "/products/{product_id}", "/orders/"} <= paths
    assert not [p for p in paths if "internal" in p.lower() or p.startswith("/health")]
    operation_ids = [
        op["operationId"]
        for item in spec["paths"].values()
        for op in item.values()
        if "operationId" in op
    ]
    assert len(operation_ids) == len(set(operation_ids))
    assert spec.get("info", {}).get("x-missing-upstreams") is None


def test_real_redirect_points_at_the_gateway_whatever_the_host(stack: RunningStack) -> None:
    """catalog's own trailing-slash redirect, built from the Host it was sent."""
    for headers in ({"Host": "evil.com"}, {"Host": ""}):
        response = httpx.get(stack.url("gateway") + "/products", headers=headers, timeout=30)

        assert response.status_code in (307, 308)
        assert response.headers["location"].startswith("/products/")


def test_services_refuse_an_oversized_head_themselves(stack: RunningStack) -> None:
    """users, catalog and orders run the same guarded server as the gateway."""
    for name in ("users", "catalog", "orders"):
        response = httpx.get(
            stack.url(name) + "/health/live", headers={"X-Big": "a" * 20_000}, timeout=30
        )

        assert response.status_code == 431
        assert response.headers["content-type"] == "application/problem+json"
