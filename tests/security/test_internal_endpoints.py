"""/internal/... is for services only: never routed by the gateway, whatever the spelling, and
every internal endpoint of every service refuses a caller without the service token."""

from __future__ import annotations

import re
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from shop_dev.testing import RunningStack, ShopDatabase, TestKeys

pytestmark = pytest.mark.stack


def _raw_request(
    base_url: str, method: str, raw_path: str, headers: dict[str, str]
) -> tuple[int, str]:
    """Send the path byte for byte (HTTP clients normalise dot segments and encodings)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"{method} {raw_path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Content-Length: 0")
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1])
    match = re.search(r"(?im)^content-type:\s*(\S+)", head)
    return status, match.group(1) if match else ""


BLOCKED_PATHS = [
    ("GET", "/internal/users?ids=1"),
    ("GET", "/internal"),
    ("GET", "/internal/"),
    ("GET", "/INTERNAL/users?ids=1"),
    ("GET", "/Internal/users?ids=1"),
    ("GET", "/%69nternal/users?ids=1"),
    ("GET", "/%49NTERNAL/users?ids=1"),
    ("GET", "/%2569nternal/users?ids=1"),
    ("GET", "/internal%2fusers?ids=1"),
    ("GET", "/internal;v=1/users?ids=1"),
    ("GET", "//internal/users?ids=1"),
    ("GET", "/./internal/users?ids=1"),
    ("GET", "/users/../internal/users?ids=1"),
    ("GET", "/users/%2e%2e/internal/users?ids=1"),
    ("GET", "/users/..%2finternal/users?ids=1"),
    ("GET", "/users/..%5cinternal/users?ids=1"),
    ("GET", "/users\\..\\internal/users?ids=1"),
    ("POST", "/internal/orders/recover"),
    ("POST", "/orders/../internal/orders/recover"),
    ("POST", "/orders/%2E%2E/%69nternal/orders/recover"),
    ("POST", "/internal/reservations/sweep"),
    ("POST", "/products/%2e%2e%2finternal/reservations/sweep"),
    ("GET", "/orders/internal/recover"),
    ("GET", "/products/internal"),
]


@pytest.mark.parametrize(("method", "raw_path"), BLOCKED_PATHS)
def test_internal_paths_are_404_at_the_gateway_even_with_the_service_token(
    stack: RunningStack, method: str, raw_path: str
) -> None:
    status, content_type = _raw_request(
        stack.url("gateway"), method, raw_path, {"X-Service-Token": stack.internal_api_token}
    )

    assert (status, content_type) == (404, "application/problem+json")


def _settings_and_app(service: str, shop_db: ShopDatabase) -> FastAPI:
    kwargs = shop_db.settings_kwargs(service)
    match service:
        case "users":
            from users.config import UsersSettings
            from users.main import create_app as users_app

            return users_app(UsersSettings(**kwargs))
        case "catalog":
            from catalog.config import CatalogSettings
            from catalog.main import create_app as catalog_app

            return catalog_app(CatalogSettings(**kwargs))
        case _:
            from orders.config import OrdersSettings
            from orders.main import create_app as orders_app

            return orders_app(OrdersSettings(**kwargs))


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """APIRoutes, also inside included routers (FastAPI wraps those in `_IncludedRouter` objects
    holding the `original_router`; the services include theirs without an extra prefix)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found += _api_routes(list(inner.routes))
    return found


def _internal_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) under /internal the app serves (built, not started: no I/O)."""
    return [
        (method, route.path)
        for route in _api_routes(list(app.routes))
        if route.path.startswith("/internal")
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


WRONG_TOKENS: list[dict[str, str]] = [
    {},
    {"X-Service-Token": ""},
    {"X-Service-Token": "wrong"},
]


@pytest.mark.parametrize("service", ["users", "catalog", "orders"])
def test_every_internal_endpoint_needs_the_service_token(
    stack: RunningStack, shop_db: ShopDatabase, jwt_keys: TestKeys, service: str
) -> None:
    routes = _internal_routes(_settings_and_app(service, shop_db))
    assert routes, f"{service} has no internal endpoint?"
    token = stack.internal_api_token
    admin_bearer = {"Authorization": f"Bearer {jwt_keys.token(1, 'admin', is_superuser=True)}"}
    refusals = [
        *WRONG_TOKENS,
        {"X-Service-Token": token.upper() if token.upper() != token else token.lower()},
        {"X-Service-Token": token[:-1]},
        {"X-Service-Token": f"{token}x"},
        admin_bearer,  # an administrator's user token is not a service token
    ]
    base = stack.url(service)
    with httpx.Client(base_url=base, timeout=30) as client:
        for method, path in routes:
            url = _concrete(path)
            query = {"ids": "1"} if service == "users" else {}
            for headers in refusals:
                response = client.request(method, url, params=query, headers=headers, json={})
                assert response.status_code == 403, (method, path, headers, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["type"] == "/problems/service-token-required"
            allowed = client.request(
                method, url, params=query, headers={"X-Service-Token": token}, json={}
            )
            assert allowed.status_code != 403, (method, path, allowed.text)
            assert allowed.status_code < 500, (method, path, allowed.text)


def test_the_gateway_serves_no_internal_endpoint(stack: RunningStack) -> None:
    spec = httpx.get(f"{stack.url('gateway')}/openapi.json", timeout=30).json()

    assert [p for p in spec["paths"] if "internal" in p.lower()] == []
