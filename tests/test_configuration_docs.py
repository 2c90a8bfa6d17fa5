"""`.env.example` documents every setting of every process, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from catalog.config import CatalogSettings
from gateway.config import GatewaySettings
from orders.config import OrdersSettings
from users.config import UsersSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, type[BaseSettings]] = {
    "users": UsersSettings,
    "catalog": CatalogSettings,
    "orders": OrdersSettings,
    "gateway": GatewaySettings,
}
# Read by the launcher, compose and the bootstrap, not by a service's settings class.
LAUNCHER_ONLY = {
    "POSTGRES_PASSWORD",
    "USERS_DB_PASSWORD",
    "CATALOG_DB_PASSWORD",
    "ORDERS_DB_PASSWORD",
    "SHOP_PG_ADMIN_URL",
    "SHOP_DB_NAME",
    "GATEWAY_PORT",
    "USERS_PORT",
    "CATALOG_PORT",
    "ORDERS_PORT",
    "PGBOUNCER_PORT",
    "USERS_WEB_CONCURRENCY",
    "CATALOG_WEB_CONCURRENCY",
    "ORDERS_WEB_CONCURRENCY",
    "GATEWAY_WEB_CONCURRENCY",
    "SHOP_TEST_PG_ADMIN_URL",
    "SHOP_DEV_STATE_DIR",
}


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


@pytest.mark.parametrize("process", sorted(SETTINGS))
def test_every_setting_is_documented_in_env_example(process: str) -> None:
    fields = {name.upper() for name in SETTINGS[process].model_fields}

    assert fields - _documented() == set()


def test_env_example_names_only_real_settings() -> None:
    known = {name.upper() for cls in SETTINGS.values() for name in cls.model_fields}

    assert _documented() - known - LAUNCHER_ONLY == set()
