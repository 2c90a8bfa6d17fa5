"""users as a real uvicorn process configured from the environment, through PgBouncer: the first
superuser signs in over HTTP, and the JWKS it serves verifies its tokens with the same
shop_common code catalog, orders and the gateway use."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from shop_common.auth import RemoteJwks, TokenVerifier
from shop_dev.processes import ServiceProcess
from shop_dev.stack import free_port
from shop_dev.testing import ShopDatabase

SUPERUSER = f"proc_{uuid.uuid4().hex[:10]}"
SUPERUSER_PASSWORD = "process-superuser-password"


@pytest.fixture(scope="module")
def users_url(shop_db: ShopDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {key.upper(): str(value) for key, value in shop_db.settings_kwargs("users").items()}
    env |= {
        "FIRST_SUPERUSER_USERNAME": SUPERUSER,
        "FIRST_SUPERUSER_EMAIL": f"{SUPERUSER}@example.com",
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "LOGIN_RATE_LIMIT_PER_MINUTE": "100000",
        "LOGIN_RATE_LIMIT_BURST": "100000",
        "REGISTRATION_RATE_LIMIT_BURST": "100",
        "LOG_LEVEL": "WARNING",
    }
    log: Path = tmp_path_factory.mktemp("users-process") / "users.log"
    process = ServiceProcess(name="users", port=free_port(), env=env, log_path=log)
    process.start()
    try:
        process.wait_live(timeout=90)
        yield process.url
    finally:
        process.stop()


def test_first_superuser_token_verifies_against_the_served_jwks(users_url: str) -> None:
    with httpx.Client(base_url=users_url, timeout=10) as client:
        response = client.post(
            "/auth/token", data={"username": SUPERUSER, "password": SUPERUSER_PASSWORD}
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"}).json()

    async def verify() -> Any:
        async with httpx.AsyncClient(base_url=users_url, timeout=10) as http:

            async def fetch() -> dict[str, Any]:
                jwks: dict[str, Any] = (await http.get("/.well-known/jwks.json")).json()
                return jwks

            verifier = TokenVerifier(RemoteJwks(fetch), issuer="shop-users", audience="shop")
            return await verifier.verify(token)

    principal = asyncio.run(verify())

    assert (principal.id, principal.username, principal.is_superuser) == (
        me["id"],
        SUPERUSER,
        True,
    )


def test_identical_registrations_racing_over_http_create_one_account(users_url: str) -> None:
    name = f"race_{uuid.uuid4().hex[:10]}"
    body = {"username": name, "email": f"{name}@example.com", "password": "race-password"}
    barrier = threading.Barrier(6)

    def register(_: int) -> int:
        with httpx.Client(base_url=users_url, timeout=30) as client:
            barrier.wait()
            return client.post("/users/", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(register, range(6)))

    assert statuses == [201, 409, 409, 409, 409, 409]
