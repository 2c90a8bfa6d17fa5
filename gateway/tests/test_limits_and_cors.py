"""Login rate limit per client IP (in memory, and shared through Redis) and CORS."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
import redis

if TYPE_CHECKING:
    from conftest import GatewayFactory, Process

REDIS_URL = "redis://127.0.0.1:6379/0"


def _login(url: str) -> httpx.Response:
    return httpx.post(url + "/auth/token", data={"username": "u", "password": "p"})


@pytest.fixture(scope="module")
def limited_gateway(start_gateway: GatewayFactory) -> Process:
    return start_gateway(login_rate_limit="3", login_rate_window_seconds="60")


def test_login_is_rate_limited_per_ip_with_retry_after(limited_gateway: Process) -> None:
    statuses = [_login(limited_gateway.url).status_code for _ in range(3)]

    refused = _login(limited_gateway.url)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])


def test_encoded_login_path_counts_towards_the_same_limit(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(login_rate_limit="1")
    form = {"username": "u", "password": "p"}

    first = httpx.post(gateway.url + "/auth/token", data=form)
    encoded = httpx.post(gateway.url + "/auth/%74oken", data=form)
    doubled = httpx.post(gateway.url + "//auth//token/", data=form)

    assert first.status_code == 200
    assert encoded.status_code == 429
    assert doubled.status_code == 429


def test_other_routes_are_not_limited_by_the_login_limit(limited_gateway: Process) -> None:
    for _ in range(4):
        _login(limited_gateway.url)

    assert httpx.get(limited_gateway.url + "/users/me").status_code == 200


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")
def test_login_limit_is_shared_between_gateways_through_redis(
    start_gateway: GatewayFactory,
) -> None:
    prefix = f"test:gateway:{uuid.uuid4().hex}:"
    first = start_gateway(redis_url=REDIS_URL, redis_key_prefix=prefix, login_rate_limit="2")
    second = start_gateway(redis_url=REDIS_URL, redis_key_prefix=prefix, login_rate_limit="2")

    answers = [_login(first.url).status_code, _login(second.url).status_code]
    refused = _login(first.url)

    assert answers == [200, 200]
    assert refused.status_code == 429
    assert redis.Redis.from_url(REDIS_URL).ttl(f"{prefix}login:127.0.0.1") > 0


@pytest.fixture(scope="module")
def cors_gateway(start_gateway: GatewayFactory) -> Process:
    return start_gateway(cors_origins="https://shop.example, https://admin.shop.example")


def test_cors_preflight_allows_a_configured_origin(cors_gateway: Process) -> None:
    response = httpx.options(
        cors_gateway.url + "/products/",
        headers={
            "Origin": "https://admin.shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://admin.shop.example"


def test_cors_refuses_an_unknown_origin(cors_gateway: Process) -> None:
    response = httpx.get(
        cors_gateway.url + "/products/1", headers={"Origin": "https://evil.example"}
    )

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_headers_on_a_simple_request(cors_gateway: Process) -> None:
    response = httpx.get(
        cors_gateway.url + "/products/1", headers={"Origin": "https://shop.example"}
    )

    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
