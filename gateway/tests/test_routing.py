"""Routing table and path normalisation: where a request goes, and that /internal never goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.config import DEFAULT_ROUTES
from gateway.routing import Target, is_blocked, normalise, resolve

if TYPE_CHECKING:
    from conftest import Process

INTERNAL_TRICKS = [
    "/internal/users",
    "/INTERNAL/users",
    "/Internal/reservations",
    "/%69nternal/users",
    "/%2569nternal/users",
    "//internal/users",
    "/orders/../internal/users",
    "/orders/%2e%2e/internal/users",
    "/orders/%2E%2E/%2e/internal",
    "/products/..%2finternal/reservations",
    "/products/..%5cinternal/reservations",
    "/users/internal",
    "/products/1/INTERNAL",
    "/orders/%20internal%20",
    "/orders/internal;x=1",
    "/./internal/users",
]


@pytest.mark.parametrize("path", INTERNAL_TRICKS)
def test_internal_path_tricks_are_blocked_by_the_resolver(path: str) -> None:
    assert is_blocked(path)
    assert resolve(path, DEFAULT_ROUTES) is None


@pytest.mark.parametrize("path", INTERNAL_TRICKS)
def test_internal_paths_answer_404_problem_whatever_the_encoding(
    gateway: Process, path: str
) -> None:
    status, headers, body = gateway.raw("GET", path)

    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert "service" not in body  # nothing reached an upstream (the stub would echo its name)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/products/7", Target("products", "catalog", "/products/7")),
        ("/products/", Target("products", "catalog", "/products/")),
        ("//products//7", Target("products", "catalog", "/products/7")),
        ("/users/../orders/3", Target("orders", "orders", "/orders/3")),
        ("/orders/./3/", Target("orders", "orders", "/orders/3/")),
        ("/.well-known/jwks.json", Target(".well-known", "users", "/.well-known/jwks.json")),
        (
            "/users/by-email/a%40b.example",
            Target("users", "users", "/users/by-email/a%40b.example"),
        ),
        ("/products/internals", Target("products", "catalog", "/products/internals")),
    ],
)
def test_resolver_picks_the_upstream_and_the_normalised_path(path: str, expected: Target) -> None:
    assert resolve(path, DEFAULT_ROUTES) == expected


@pytest.mark.parametrize(
    "path", ["/", "/admin", "/Products/1", "/health/ready/x", "/../etc/passwd"]
)
def test_unknown_prefixes_do_not_resolve(path: str) -> None:
    assert resolve(path, DEFAULT_ROUTES) is None


def test_normalise_keeps_trailing_slash_and_encoding() -> None:
    assert normalise("/a/b/../c/") == "/a/c/"
    assert normalise("/a/b/..") == "/a/"
    assert normalise("/a/%2Fb") == "/a/%2Fb"
    assert normalise("/../../a") == "/a"


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/users/me", "users"),
        ("/auth/token", "users"),
        ("/.well-known/jwks.json", "users"),
        ("/categories/", "catalog"),
        ("/products/42", "catalog"),
        ("/tags/", "catalog"),
        ("/orders/", "orders"),
        ("/orders/user/5", "orders"),
    ],
)
def test_each_prefix_reaches_its_upstream(client: httpx.Client, path: str, service: str) -> None:
    method = "POST" if path == "/auth/token" else "GET"

    response = client.request(method, path)

    assert response.status_code == 200
    assert response.json()["service"] == service
    assert response.json()["path"] == path


def test_path_and_query_are_forwarded_unchanged(client: httpx.Client) -> None:
    response = client.get("/products/", params={"q": "mug & cup", "page": "2", "tag": ["a", "b"]})

    assert response.json()["query"] == "q=mug+%26+cup&page=2&tag=a&tag=b"
    assert response.json()["raw_path"] == "/products/"


def test_dot_segments_are_resolved_before_forwarding(gateway: Process) -> None:
    status, _, body = gateway.raw("GET", "/users/../products/%2e/9")

    assert status == 200
    assert body["service"] == "catalog"
    assert body["raw_path"] == "/products/9"


@pytest.mark.parametrize("path", ["/", "/admin/users", "/openapi.yaml", "/Products/1", "/docs/x"])
def test_unknown_paths_are_404_problem(client: httpx.Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["instance"] == path
    assert response.json()["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/auth/token", "OPTIONS, POST"),
        ("DELETE", "/tags/", "GET, HEAD, OPTIONS"),
        ("PUT", "/orders/1", "GET, HEAD, OPTIONS, PATCH, POST"),
        ("TRACE", "/products/1", "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
    ],
)
def test_methods_a_route_does_not_need_are_405(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == "application/problem+json"
