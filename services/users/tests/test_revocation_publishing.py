"""users publishes revocation stamps after the commit; when Redis is down it still commits, refuses
the old tokens itself, and rewrites the stamps from its database once Redis is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shop_common.revocation import RedisStamps, StampPublisher, async_redis
from users.auth.sessions import RevocationPublisher
from users.main import create_app

if TYPE_CHECKING:
    from conftest import Account, AccountFactory, SettingsFactory

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def stamp(prefix: str, user_id: int) -> int:
    async def read() -> int:
        client = async_redis(REDIS_URL)
        try:
            return await RedisStamps(client, prefix=prefix).min_version(user_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"test:{uuid.uuid4().hex[:12]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{value}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def app_with(settings_factory: SettingsFactory) -> Iterator[Any]:
    clients: list[TestClient] = []

    def build(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings_factory(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def test_a_revocation_reaches_redis_when_the_request_commits(
    app_with: Any, make_account: AccountFactory, admin: Account, prefix: str
) -> None:
    client: TestClient = app_with(redis_url=REDIS_URL, redis_key_prefix=prefix)
    account = make_account()
    assert stamp(prefix, account.id) == 0

    response = client.post(f"/users/{account.id}/sessions/revoke", headers=admin.headers)

    assert response.status_code == 204
    assert stamp(prefix, account.id) == 1


def test_redis_down_still_revokes_in_the_database_and_on_users(
    app_with: Any, make_account: AccountFactory, admin: Account, db: Session, prefix: str
) -> None:
    client: TestClient = app_with(redis_url=DOWN_URL, redis_key_prefix=prefix)
    account = make_account()

    revoked = client.post(f"/users/{account.id}/sessions/revoke", headers=admin.headers)
    me = client.get("/users/me", headers=account.headers)

    assert revoked.status_code == 204
    assert me.status_code == 401
    version = db.scalar(
        text("SELECT token_version FROM users.users WHERE id = :id"), {"id": account.id}
    )
    assert version == 1
    # Redis is back (here: the reachable one): the resync rewrites the stamp from the database.
    app: FastAPI = client.app  # type: ignore[assignment]
    republisher = RevocationPublisher(
        StampPublisher(redis.Redis.from_url(REDIS_URL), prefix=prefix), app.state.sessionmaker
    )
    assert republisher.resync()
    assert stamp(prefix, account.id) == 1
