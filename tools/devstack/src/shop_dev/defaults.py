"""Development defaults. Printed by the launcher; refused by the services outside dev mode."""

from __future__ import annotations

import os

DEV_PASSWORDS = {
    "users": "users-dev-password",
    "catalog": "catalog-dev-password",
    "orders": "orders-dev-password",
}
DEV_INTERNAL_API_TOKEN = "dev-internal-token"  # noqa: S105 - dev default, refused outside dev
DEV_SUPERUSER = ("admin", "admin@example.com", "admin-dev-password")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PORTS = {"gateway": 8000, "users": 8001, "catalog": 8002, "orders": 8003, "pgbouncer": 6432}


def role_passwords() -> dict[str, str]:
    """Role passwords from USERS_DB_PASSWORD / CATALOG_DB_PASSWORD / ORDERS_DB_PASSWORD or dev defaults."""
    return {
        service: os.environ.get(f"{service.upper()}_DB_PASSWORD") or default
        for service, default in DEV_PASSWORDS.items()
    }
