"""Cheap requests that used to cost a 500 (and a long traceback): deeply nested JSON, NUL or
undecodable bytes in a query string, and claims of the wrong type. Every service answers a 4xx
problem+json, whichever of them receives the request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from shop_dev.testing import RunningStack, TestKeys

if TYPE_CHECKING:
    from security.conftest import Account

pytestmark = pytest.mark.stack

PROBLEM = "application/problem+json"
SERVICES = ("users", "catalog", "orders")
# One authenticated write per service that takes a JSON body, and one of its fields.
WRITES = {
    "users": ("/users/", "bio"),
    "catalog": ("/products/", "name"),
    "orders": ("/orders/", "items"),
}
# One authenticated read per service that takes a free-text or filter query parameter.
READS = {"users": "/users/", "catalog": "/products/", "orders": "/orders/"}


def deep_json(levels: int, field: str = "bio") -> bytes:
    """A declared field nested `levels` deep: the value every field validator walks."""
    return b'{"' + field.encode() + b'":' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("service", SERVICES)
def test_json_nested_400_levels_is_422_not_500(
    stack: RunningStack, admin: Account, service: str
) -> None:
    path, field = WRITES[service]
    response = httpx.post(
        f"{stack.url(service)}{path}",
        content=deep_json(400, field),
        headers={**admin.headers, "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["type"] == "json_too_deep"


def test_deep_json_through_the_gateway_is_422_and_logs_no_traceback(
    stack: RunningStack, gateway: httpx.Client
) -> None:
    before = stack.log_path("users").stat().st_size

    response = gateway.post(
        "/users/", content=deep_json(400), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    logged = stack.log_path("users").read_bytes()[before:]
    assert b"Traceback" not in logged
    assert b"RecursionError" not in logged


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("query", ["q=%00", "q=ab%00cd", "status=%ff%fe", "q=%c3%28"])
def test_nul_or_undecodable_query_parameter_is_422(
    stack: RunningStack, admin: Account, service: str, query: str
) -> None:
    response = httpx.get(
        f"{stack.url(service)}{READS[service]}?{query}", headers=admin.headers, timeout=30
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["query"]


def test_admin_user_search_with_nul_is_422_through_the_gateway(
    gateway: httpx.Client, admin: Account
) -> None:
    response = gateway.get("/users/?q=%00", headers=admin.headers)

    assert response.status_code == 422


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    "claims",
    [
        {"is_superuser": "false"},
        {"is_superuser": 1},
        {"is_superuser": "true"},
        {"sub": "0"},
        {"sub": "-5"},
        {"sub": " 7"},
        {"sub": "00042"},
        {"sub": "99999999999999999999"},
        {"ver": "0"},
        {"ver": True},
        {"ver": -1},
        {"username": 12},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_are_401(
    stack: RunningStack,
    jwt_keys: TestKeys,
    admin: Account,
    service: str,
    claims: dict[str, Any],
) -> None:
    params: dict[str, Any] = {"username": admin.username, "is_superuser": True, **claims}
    token = jwt_keys.token(admin.id, **params)
    path = {"users": "/users/me", "catalog": "/products/", "orders": "/orders/"}[service]
    method = "POST" if service == "catalog" else "GET"

    response = httpx.request(
        method,
        f"{stack.url(service)}{path}",
        json={} if method == "POST" else None,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM


def test_string_false_superuser_claim_does_not_read_admin_stats(
    stack: RunningStack, jwt_keys: TestKeys, admin: Account
) -> None:
    claims: dict[str, Any] = {"is_superuser": "false"}
    token = jwt_keys.token(admin.id, admin.username, **claims)

    response = httpx.get(
        f"{stack.url('orders')}/orders/stats/summary",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 401
