"""Seed data through the public API, via the gateway, as a client would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

LARGE_STOCK = 1_000_000  # catalog's MAX_STOCK: order placement never runs out
HOT_PRODUCTS = 100  # category A: the products read and ordered by the scenarios
OTHER_PRODUCTS = 100  # category B: what the list filters have to skip


@dataclass(frozen=True)
class SeedData:
    category_id: int
    product_ids: list[int]  # category A, large stock
    scarce_product_id: int
    scarce_stock: int
    username: str
    password: str
    user_token: str
    admin_token: str


def _check(response: httpx.Response, expected: int) -> Any:
    if response.status_code != expected:
        raise RuntimeError(
            f"seed: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code} (expected {expected}): {response.text[:500]}"
        )
    return response.json()


def login(client: httpx.Client, username: str, password: str) -> str:
    body = _check(
        client.post("/auth/token", data={"username": username, "password": password}), 200
    )
    return str(body["access_token"])


def _products(prefix: str, count: int, category_id: int, start_price: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"Bench {prefix} product {i}",
            "sku": f"BENCH-{prefix}-{i:04d}".upper(),
            "price": f"{start_price + (i % 50) * 4}.99",
            "stock_quantity": LARGE_STOCK,
            "description": f"Benchmark product {i}: a sturdy widget for load tests",
            "category_id": category_id,
            "tags": ["bench", "even" if i % 2 == 0 else "odd"],
        }
        for i in range(count)
    ]


def _bulk(client: httpx.Client, items: list[dict[str, Any]]) -> list[int]:
    ids: list[int] = []
    for start in range(0, len(items), 100):
        body = _check(
            client.post("/products/bulk", json={"items": items[start : start + 100]}), 201
        )
        rows = body["items"] if isinstance(body, dict) else body
        ids.extend(int(row["id"]) for row in rows)
    return ids


def seed(gateway_url: str, admin_username: str, admin_password: str, scarce_stock: int) -> SeedData:
    tag = secrets.token_hex(3)
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        admin_token = login(client, admin_username, admin_password)
        client.headers["Authorization"] = f"Bearer {admin_token}"
        categories = [
            int(
                _check(client.post("/categories/", json={"name": f"Bench {name} {tag}"}), 201)["id"]
            )
            for name in ("A", "B")
        ]
        hot = _bulk(client, _products(f"{tag}-A", HOT_PRODUCTS, categories[0], 5))
        _bulk(client, _products(f"{tag}-B", OTHER_PRODUCTS, categories[1], 7))
        scarce = _check(
            client.post(
                "/products/",
                json={
                    "name": f"Bench scarce product {tag}",
                    "sku": f"BENCH-{tag}-SCARCE".upper(),
                    "price": "49.99",
                    "stock_quantity": scarce_stock,
                    "category_id": categories[1],
                },
            ),
            201,
        )
        del client.headers["Authorization"]
        username, password = f"bench_{tag}", secrets.token_urlsafe(18)
        _check(
            client.post(
                "/users/",
                json={
                    "username": username,
                    "email": f"{username}@example.com",
                    "password": password,
                },
            ),
            201,
        )
        user_token = login(client, username, password)
    return SeedData(
        category_id=categories[0],
        product_ids=hot,
        scarce_product_id=int(scarce["id"]),
        scarce_stock=scarce_stock,
        username=username,
        password=password,
        user_token=user_token,
        admin_token=admin_token,
    )
