"""API fuzzing with schemathesis against the running stack: each service's own OpenAPI document
(called directly) and the gateway's merged one. Bounded and derandomized (see test_fuzz.py).

Destructive administrator operations are aimed at sacrificial rows made here, so fuzzing cannot
deactivate the administrator or change rows other tests rely on; operations that act on the
whole table (deactivate/delete inactive users) are not fuzzed with administrator rights."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from shop_dev.testing import RunningStack, ShopDatabase, TestKeys

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Whole-table administrator actions: fuzzed only with a regular user's token (403).
BULK_ADMIN_ACTIONS = {("POST", "/users/deactivate-inactive"), ("DELETE", "/users/inactive")}
# Not fuzzed through the gateway: every call spends the shared login rate limit of 127.0.0.1
# (it is fuzzed at the users service directly, from documentation client addresses).
GATEWAY_EXCLUDED = r"^/auth/token$"


@dataclass
class Findings:
    """Statuses a service answered that its OpenAPI document does not list, per operation."""

    undocumented: dict[str, set[int]] = field(default_factory=dict)

    def add(self, label: str, status: int) -> None:
        self.undocumented.setdefault(label, set()).add(status)


@pytest.fixture(scope="session")
def fuzz_findings(request: pytest.FixtureRequest) -> Iterator[Findings]:
    findings = Findings()
    yield findings
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if findings.undocumented and reporter is not None:
        reporter.write_line("")
        reporter.write_line("fuzzing: problem statuses the OpenAPI documents do not list:")
        for op, codes in sorted(findings.undocumented.items()):
            reporter.write_line(f"  {op}: {sorted(codes)}")


@dataclass
class Actors:
    user_headers: dict[str, str]
    admin_headers: dict[str, str]
    user_id: int
    sacrificial: dict[str, int]  # path parameter name -> id of a row fuzzing may destroy

    def headers_for(self, method: str, path: str, *, admin_writes: bool) -> dict[str, str]:
        if path.endswith("/me"):
            return self.user_headers  # never fuzz the administrator's own profile
        if method in SAFE_METHODS:
            return self.admin_headers
        if (method, path) in BULK_ADMIN_ACTIONS or not admin_writes:
            return self.user_headers
        return self.admin_headers

    def aimed_parameters(self, method: str, path: str) -> dict[str, Any] | None:
        """An administrator's destructive call is pointed at the sacrificial rows."""
        if method in SAFE_METHODS:
            return None
        names = [n for n in self.sacrificial if f"{{{n}}}" in path]
        return {n: self.sacrificial[n] for n in names} or None


def _register(stack: RunningStack, prefix: str) -> int:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    response = httpx.post(
        f"{stack.url('gateway')}/users/",
        json={"username": name, "email": f"{name}@example.com", "password": "fuzz-password-1"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.fixture(scope="session")
def actors(stack: RunningStack, shop_db: ShopDatabase, jwt_keys: TestKeys) -> Actors:
    engine = create_engine(shop_db.admin_url, poolclass=NullPool)
    with engine.connect() as conn:
        admin_id = int(
            conn.scalar(
                text("SELECT id FROM users.users WHERE username = :u"), {"u": stack.admin_username}
            )
        )
    engine.dispose()
    admin_headers = {
        "Authorization": f"Bearer {jwt_keys.token(admin_id, stack.admin_username, True)}"
    }
    user_id = _register(stack, "fuzzer")
    victim_id = _register(stack, "victim")
    with httpx.Client(base_url=stack.url("gateway"), headers=admin_headers, timeout=30) as c:
        category = c.post("/categories/", json={"name": f"Fuzz {uuid.uuid4().hex[:8]}"})
        sku = f"FUZZ-{uuid.uuid4().hex[:10].upper()}"
        product = c.post(
            "/products/",
            json={"name": f"Fuzz {sku}", "sku": sku, "price": "2.00", "stock_quantity": 100},
        )
    assert category.status_code == 201, category.text
    assert product.status_code == 201, product.text
    return Actors(
        user_headers={"Authorization": f"Bearer {jwt_keys.token(user_id, 'fuzzer')}"},
        admin_headers=admin_headers,
        user_id=user_id,
        sacrificial={
            "user_id": victim_id,
            "category_id": int(category.json()["id"]),
            "product_id": int(product.json()["id"]),
        },
    )


def _load(url: str) -> Any:
    return schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)


@pytest.fixture(scope="session")
def users_schema(stack: RunningStack) -> Any:
    return _load(stack.url("users")).exclude(path_regex=r"^/internal")


@pytest.fixture(scope="session")
def catalog_schema(stack: RunningStack) -> Any:
    return _load(stack.url("catalog")).exclude(path_regex=r"^/internal")


@pytest.fixture(scope="session")
def orders_schema(stack: RunningStack) -> Any:
    return _load(stack.url("orders")).exclude(path_regex=r"^/internal")


@pytest.fixture(scope="session")
def internal_schemas(stack: RunningStack) -> dict[str, Any]:
    """The internal operations users and catalog publish in their own documents."""
    return {
        name: _load(stack.url(name)).include(path_regex=r"^/internal")
        for name in ("users", "catalog")
    }


@pytest.fixture(scope="session")
def gateway_schema(stack: RunningStack) -> Any:
    return _load(stack.url("gateway")).exclude(path_regex=GATEWAY_EXCLUDED)
