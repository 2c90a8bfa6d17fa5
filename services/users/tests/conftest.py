"""Users test fixtures: the app on the session's throwaway database (through PgBouncer), signed in
as its first superuser, a superuser `db` session for assertions, and an account factory."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from shop_dev.testing import ShopDatabase
from users.config import UsersSettings
from users.main import create_app

ADMIN_PASSWORD = "first-superuser-password"


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: int
    username: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


AccountFactory = Callable[..., Account]


def make_settings(shop_db: ShopDatabase, **overrides: Any) -> UsersSettings:
    """Test settings: code-default Argon2 parameters (the OWASP minimum) and, unless a test says
    otherwise, login limits high enough that tests sharing one client IP never trip them."""
    kwargs: dict[str, Any] = {
        **shop_db.settings_kwargs("users"),
        "login_rate_limit_per_minute": 100_000,
        "login_rate_limit_burst": 100_000,
        "registration_rate_limit_per_minute": 100_000,
        "registration_rate_limit_burst": 100_000,
        "registration_global_rate_limit_per_minute": 100_000,
        "registration_global_rate_limit_burst": 100_000,
        "password_hash_queue_size": 1_000,
        "password_hash_wait_seconds": 30,
    }
    kwargs.update(overrides)
    return UsersSettings(**kwargs)


SettingsFactory = Callable[..., UsersSettings]


@pytest.fixture(scope="session")
def settings_factory(shop_db: ShopDatabase) -> SettingsFactory:
    """Settings for another app on the same database (other limits, Argon2 parameters...)."""

    def make(**overrides: Any) -> UsersSettings:
        return make_settings(shop_db, **overrides)

    return make


@pytest.fixture(scope="session")
def admin_username() -> str:
    return unique("root_")


@pytest.fixture(scope="session")
def settings(shop_db: ShopDatabase, admin_username: str) -> UsersSettings:
    return make_settings(
        shop_db,
        first_superuser_username=admin_username,
        first_superuser_email=f"{admin_username}@example.com",
        first_superuser_password=ADMIN_PASSWORD,
    )


@pytest.fixture(scope="session")
def app(settings: UsersSettings) -> Iterator[FastAPI]:
    application = create_app(settings)
    with TestClient(application):  # runs the lifespan (first superuser) once for every client
        yield application


@pytest.fixture(scope="session")
def engine(app: FastAPI) -> Engine:
    """The app's own engine (for counting the statements a request runs)."""
    app_engine: Engine = app.state.engine
    return app_engine


@pytest.fixture(scope="session")
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def login(client: TestClient, username: str, password: str) -> str:
    response = client.post("/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="session")
def admin(client: TestClient, admin_username: str) -> Account:
    """The first superuser, created by the lifespan from FIRST_SUPERUSER_*."""
    token = login(client, admin_username, ADMIN_PASSWORD)
    me = client.get("/users/me", headers=bearer(token)).json()
    return Account(me["id"], admin_username, me["email"], ADMIN_PASSWORD, token)


@pytest.fixture(scope="session")
def make_account(client: TestClient, admin: Account) -> AccountFactory:
    def make(*, superuser: bool = False, **fields: Any) -> Account:
        name = unique()
        body = {"username": name, "email": f"{name}@example.com", "password": unique("pw-")}
        body.update(fields)
        response = client.post("/users/", json=body)
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        if superuser:
            promoted = client.patch(
                f"/users/{user_id}", json={"is_superuser": True}, headers=admin.headers
            )
            assert promoted.status_code == 200, promoted.text
        token = login(client, body["username"], body["password"])
        return Account(user_id, body["username"], body["email"], body["password"], token)

    return make


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
