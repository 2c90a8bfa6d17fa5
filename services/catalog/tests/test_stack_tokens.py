"""catalog in the running stack: it verifies tokens users issues, fetching users' JWKS over HTTP."""

from __future__ import annotations

import httpx
import pytest

from shop_dev.testing import RunningStack

from .conftest import product_body

pytestmark = pytest.mark.stack


def login(stack: RunningStack) -> str:
    response = httpx.post(
        f"{stack.url('users')}/auth/token",
        data={"username": stack.admin_username, "password": stack.admin_password},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_an_admin_token_from_users_lets_catalog_create_a_product(stack: RunningStack) -> None:
    headers = {"Authorization": f"Bearer {login(stack)}"}
    body = product_body()

    created = httpx.post(f"{stack.url('catalog')}/products/", json=body, headers=headers)
    fetched = httpx.get(f"{stack.url('catalog')}/products/by-sku/{body['sku']}")

    assert created.status_code == 201, created.text
    assert fetched.json()["id"] == created.json()["id"]


def test_a_tampered_token_is_401(stack: RunningStack) -> None:
    token = login(stack)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    response = httpx.post(
        f"{stack.url('catalog')}/products/",
        json=product_body(),
        headers={"Authorization": f"Bearer {tampered}"},
    )

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
