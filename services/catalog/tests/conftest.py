"""Catalog test fixtures: the app on the session's throwaway database (through PgBouncer),
clients per role, a superuser `db` session for assertions, and product/category factories."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from catalog.config import CatalogSettings
from catalog.main import create_app
from shop_dev.processes import (
    free_port,
    start_process,
    stop_process,
    uvicorn_command,
    wait_healthy,
)
from shop_dev.testing import ShopDatabase, TestKeys

ProductFactory = Callable[..., dict[str, Any]]
CategoryFactory = Callable[..., dict[str, Any]]


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def new_sku() -> str:
    return unique("SKU-").upper()


@pytest.fixture(scope="session")
def settings(shop_db: ShopDatabase) -> CatalogSettings:
    # A long sweep interval: tests trigger sweeps themselves and assert exact counts.
    return CatalogSettings(
        **shop_db.settings_kwargs("catalog"), reservation_sweep_interval_seconds=3600
    )


@pytest.fixture(scope="session")
def app(settings: CatalogSettings) -> Iterator[FastAPI]:
    application = create_app(settings)
    with TestClient(application):  # runs the lifespan once for every client below
        yield application


@pytest.fixture(scope="session")
def engine(app: FastAPI) -> Engine:
    """The app's own engine (for counting the statements a request runs)."""
    app_engine: Engine = app.state.engine
    return app_engine


@pytest.fixture(scope="session")
def anon(app: FastAPI) -> TestClient:
    return TestClient(app)


@pytest.fixture(scope="session")
def admin(app: FastAPI, jwt_keys: TestKeys) -> TestClient:
    token = jwt_keys.token(1, "admin", is_superuser=True)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="session")
def user(app: FastAPI, jwt_keys: TestKeys) -> TestClient:
    token = jwt_keys.token(2, "alice", is_superuser=False)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="session")
def internal(app: FastAPI, shop_db: ShopDatabase) -> TestClient:
    return TestClient(app, headers={"X-Service-Token": shop_db.internal_api_token})


@pytest.fixture(scope="session")
def admin_engine(shop_db: ShopDatabase) -> Iterator[Engine]:
    engine = create_engine(shop_db.admin_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(admin_engine: Engine) -> Iterator[Session]:
    """A superuser session on its own connection: it sees only what the API committed."""
    with Session(admin_engine) as session:
        yield session


@pytest.fixture
def make_category(admin: TestClient) -> CategoryFactory:
    def make(**fields: Any) -> dict[str, Any]:
        body = {"name": unique("Category ")} | fields
        response = admin.post("/categories/", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return make


def product_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": unique("Product "),
        "sku": new_sku(),
        "price": "19.99",
        "stock_quantity": 10,
    } | fields


@pytest.fixture
def make_product(admin: TestClient) -> ProductFactory:
    def make(**fields: Any) -> dict[str, Any]:
        response = admin.post("/products/", json=product_body(**fields))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return make


@pytest.fixture(scope="session")
def catalog_url(shop_db: ShopDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn process serving catalog through the session's PgBouncer (concurrency tests)."""
    port = free_port()
    env = dict(os.environ)
    for key, value in shop_db.settings_kwargs("catalog").items():
        env[key.upper()] = str(value)
    env["RESERVATION_SWEEP_INTERVAL_SECONDS"] = "3600"
    env["LOG_LEVEL"] = "WARNING"
    log: Path = tmp_path_factory.mktemp("catalog-uvicorn") / "catalog.log"
    command = uvicorn_command(port, "--factory", "catalog.main:create_app")
    process = start_process(command, log_path=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health/ready", process, timeout=60, log_path=log)
        yield url
    finally:
        stop_process(process)
