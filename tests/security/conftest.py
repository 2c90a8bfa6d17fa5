"""Security tests against the real stack. Accounts are registered through the gateway; their
tokens are minted with the harness key (users signs with the same key), so these tests spend no
login attempts except where the rate limit itself is under test."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from shop_dev.testing import RunningStack, ShopDatabase, TestKeys


@pytest.fixture(scope="session")
def admin_engine(shop_db: ShopDatabase) -> Iterator[Engine]:
    engine = create_engine(shop_db.admin_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@dataclass
class Account:
    id: int
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(stack: RunningStack, jwt_keys: TestKeys, prefix: str, **extra: Any) -> Account:
    username = f"{prefix}_{uuid.uuid4().hex[:10]}"
    email = f"{username}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    body = {"username": username, "email": email, "password": password, **extra}
    response = httpx.post(f"{stack.url('gateway')}/users/", json=body, timeout=30)
    assert response.status_code == 201, response.text
    user_id = int(response.json()["id"])
    return Account(user_id, username, email, password, jwt_keys.token(user_id, username))


@pytest.fixture(scope="session")
def alice(stack: RunningStack, jwt_keys: TestKeys) -> Account:
    return register(stack, jwt_keys, "alice")


@pytest.fixture(scope="session")
def bob(stack: RunningStack, jwt_keys: TestKeys) -> Account:
    return register(stack, jwt_keys, "bob")


@pytest.fixture(scope="session")
def admin(stack: RunningStack, jwt_keys: TestKeys, admin_engine: Engine) -> Account:
    with admin_engine.connect() as conn:
        admin_id = conn.scalar(
            text("SELECT id FROM users.users WHERE username = :u"), {"u": stack.admin_username}
        )
    assert admin_id is not None
    return Account(
        int(admin_id),
        stack.admin_username,
        stack.admin_email,
        stack.admin_password,
        jwt_keys.token(int(admin_id), stack.admin_username, is_superuser=True),
    )


@pytest.fixture
def gateway(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("gateway"), timeout=30) as client:
        yield client


def fake_client_ip() -> str:
    """A documentation address (RFC 5737) per call: users believes X-Forwarded-For from loopback,
    so direct calls can stand for distinct clients without spending 127.0.0.1's login budget."""
    return f"198.51.100.{random.randint(1, 254)}"


def make_product(
    stack: RunningStack, admin: Account, *, name: str | None = None, **extra: Any
) -> dict[str, Any]:
    sku = f"SEC-{uuid.uuid4().hex[:12].upper()}"
    body = {
        "name": name or f"Security {sku}",
        "sku": sku,
        "price": "5.00",
        "stock_quantity": 50,
        **extra,
    }
    response = httpx.post(
        f"{stack.url('gateway')}/products/", json=body, headers=admin.headers, timeout=30
    )
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


AccountFactory = Callable[..., Account]
ProductFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_account(stack: RunningStack, jwt_keys: TestKeys) -> AccountFactory:
    def make(prefix: str = "user", **extra: Any) -> Account:
        return register(stack, jwt_keys, prefix, **extra)

    return make


@pytest.fixture
def new_product(stack: RunningStack, admin: Account) -> ProductFactory:
    def make(**fields: Any) -> dict[str, Any]:
        return make_product(stack, admin, **fields)

    return make


@pytest.fixture
def client_ip() -> Callable[[], str]:
    return fake_client_ip
