"""Login rate limits per client IP and per account: 429 + Retry-After, shared through Redis by
every replica, in memory without Redis, and X-Forwarded-For believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
import random
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request

from users.auth.client_ip import client_ip
from users.auth.ratelimit import MemoryBuckets
from users.main import create_app

if TYPE_CHECKING:
    from conftest import AccountFactory, SettingsFactory

REDIS_URL = "redis://127.0.0.1:6379/0"
PROBLEM = "application/problem+json"
# 5 per minute with a burst of 3: the 4th attempt inside a second waits for one interval (12 s).
LIMITS = {"login_rate_limit_per_minute": 5, "login_rate_limit_burst": 3}


def random_ip() -> str:
    return str(ipaddress.IPv4Address(random.randint(0x0A000001, 0x0AFFFFFE)))


WRONG = "wrong password"


def attempt(client: TestClient, username: str, ip: str, password: str = WRONG) -> int:
    response = client.post(
        "/auth/token",
        data={"username": username, "password": password},
        headers={"X-Forwarded-For": ip},
    )
    return response.status_code


@pytest.fixture
def limited_app(settings_factory: SettingsFactory) -> Iterator[FastAPI]:
    application = create_app(settings_factory(**LIMITS))
    with TestClient(application):
        yield application


@pytest.fixture
def via_proxy(limited_app: FastAPI) -> TestClient:
    """Requests arriving from the trusted proxy 127.0.0.1 (the gateway), carrying X-Forwarded-For."""
    return TestClient(limited_app, client=("127.0.0.1", 40000))


class TestLoginRateLimit:
    def test_fourth_rapid_attempt_on_one_account_is_429_with_retry_after(
        self, via_proxy: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        statuses = [attempt(via_proxy, account.username, random_ip()) for _ in range(3)]
        limited = via_proxy.post(
            "/auth/token",
            data={"username": account.username, "password": account.password},
            headers={"X-Forwarded-For": random_ip()},
        )

        assert statuses == [401, 401, 401]
        assert limited.status_code == 429
        assert limited.headers["content-type"] == PROBLEM
        assert limited.json()["type"] == "/problems/login-rate-limited"
        assert 11 <= int(limited.headers["retry-after"]) <= 12
        assert limited.json()["retry_after"] == int(limited.headers["retry-after"])
        assert "access_token" not in limited.text

    def test_account_limit_counts_the_name_in_any_case(
        self, via_proxy: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        names = [account.username, account.username.upper(), f" {account.username} "]

        statuses = [attempt(via_proxy, name, random_ip()) for name in names]

        assert statuses == [401, 401, 401]
        assert attempt(via_proxy, account.username.title(), random_ip()) == 429

    def test_one_ip_is_limited_across_accounts(self, via_proxy: TestClient) -> None:
        ip = random_ip()

        statuses = [attempt(via_proxy, f"nobody_{uuid.uuid4().hex}", ip) for _ in range(4)]

        assert statuses == [401, 401, 401, 429]
        assert attempt(via_proxy, f"nobody_{uuid.uuid4().hex}", random_ip()) == 401

    def test_forwarded_for_from_an_untrusted_peer_is_ignored(self, limited_app: FastAPI) -> None:
        direct = TestClient(limited_app, client=("198.51.100.23", 40000))

        statuses = [attempt(direct, f"nobody_{uuid.uuid4().hex}", random_ip()) for _ in range(4)]

        assert statuses == [401, 401, 401, 429]

    def test_limited_attempt_does_not_reach_the_password_check(
        self, via_proxy: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        for _ in range(3):
            attempt(via_proxy, account.username, random_ip())

        right_password = attempt(via_proxy, account.username, random_ip(), account.password)

        assert right_password == 429

    def test_zero_per_minute_disables_the_limit(
        self, settings_factory: SettingsFactory, make_account: AccountFactory
    ) -> None:
        account = make_account()
        with TestClient(create_app(settings_factory(login_rate_limit_per_minute=0))) as client:
            statuses = {attempt(client, account.username, random_ip()) for _ in range(6)}

        assert statuses == {401}


class TestSharedLimits:
    def test_replicas_share_limits_through_redis(
        self, settings_factory: SettingsFactory, make_account: AccountFactory
    ) -> None:
        account = make_account()
        settings = settings_factory(**LIMITS, redis_url=REDIS_URL)
        with (
            TestClient(create_app(settings), client=("127.0.0.1", 1)) as replica_a,
            TestClient(create_app(settings), client=("127.0.0.1", 2)) as replica_b,
        ):
            first = [attempt(replica_a, account.username, random_ip()) for _ in range(3)]
            on_b = attempt(replica_b, account.username, random_ip())

        assert first == [401, 401, 401]
        assert on_b == 429

    def test_unreachable_redis_falls_back_to_this_process(
        self, settings_factory: SettingsFactory, make_account: AccountFactory
    ) -> None:
        account = make_account()
        settings = settings_factory(**LIMITS, redis_url="redis://127.0.0.1:1/0")
        with TestClient(create_app(settings), client=("127.0.0.1", 1)) as client:
            statuses = [attempt(client, account.username, random_ip()) for _ in range(4)]
            other = attempt(client, f"nobody_{uuid.uuid4().hex}", random_ip(), account.password)

        assert statuses == [401, 401, 401, 429]
        assert other == 401


class TestGcra:
    def test_bucket_refills_one_attempt_per_interval(self) -> None:
        now = [1000.0]
        buckets = MemoryBuckets(interval=12.0, tolerance=24.0, clock=lambda: now[0])

        assert [buckets.hit(["k"]) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert buckets.hit(["k"]) == 12.0
        now[0] += 11.5
        assert buckets.hit(["k"]) == 0.5
        now[0] += 0.5
        assert buckets.hit(["k"]) == 0.0
        assert buckets.hit(["k"]) == 12.0

    def test_rejected_attempt_consumes_no_key(self) -> None:
        now = [0.0]
        buckets = MemoryBuckets(interval=10.0, tolerance=0.0, clock=lambda: now[0])
        assert buckets.hit(["full"]) == 0.0

        assert buckets.hit(["full", "fresh"]) == 10.0
        assert buckets.hit(["fresh"]) == 0.0


def request_from(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.9.0.0/16")]


class TestClientIp:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "expected"),
        [
            ("203.0.113.9", [], "203.0.113.9"),
            ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
            ("127.0.0.1", [], "127.0.0.1"),
            ("127.0.0.1", ["203.0.113.9"], "203.0.113.9"),
            ("127.0.0.1", ["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
            ("127.0.0.1", ["6.6.6.6, 203.0.113.9, 10.9.1.1"], "203.0.113.9"),
            ("127.0.0.1", ["6.6.6.6", "203.0.113.9"], "203.0.113.9"),
            ("127.0.0.1", ["garbage"], "127.0.0.1"),
            ("127.0.0.1", ["10.9.0.5, 10.9.0.6"], "10.9.0.5"),
            ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
            ("testclient", ["1.2.3.4"], "testclient"),
        ],
    )
    def test_client_ip_is_the_rightmost_untrusted_hop(
        self, peer: str, forwarded: list[str], expected: str
    ) -> None:
        assert client_ip(request_from(peer, forwarded), TRUSTED) == expected
