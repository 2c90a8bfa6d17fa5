"""Rate limit on logins (gateway and users, 429 + Retry-After) and the gateway's body limit."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shop_dev.processes import ServiceProcess
from shop_dev.stack import free_port
from shop_dev.testing import RunningStack

pytestmark = pytest.mark.stack

MIB = 1024 * 1024


def _second_process(
    stack: RunningStack, name: str, tmp_path: Path, limits: dict[str, str]
) -> Iterator[str]:
    """Another process of `name`, same environment but production-like login limits (the test
    stack raises them so the suite is not throttled); the stack's own process is left alone."""
    process = ServiceProcess(
        name=name,
        port=free_port(),
        env=stack.env(name) | limits,
        log_path=tmp_path / f"strict-{name}.log",
    )
    process.start()
    try:
        process.wait_live(90)
        yield process.url
    finally:
        process.stop()


@pytest.fixture
def strict_gateway(stack: RunningStack, tmp_path: Path) -> Iterator[str]:
    yield from _second_process(
        stack, "gateway", tmp_path, {"LOGIN_RATE_LIMIT": "2", "LOGIN_RATE_WINDOW_SECONDS": "60"}
    )


@pytest.fixture(scope="module")
def strict_users(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default production limits: 5 a minute per client IP and per account, burst 5."""
    yield from _second_process(
        stack,
        "users",
        tmp_path_factory.mktemp("strict-users"),
        {"LOGIN_RATE_LIMIT_PER_MINUTE": "5", "LOGIN_RATE_LIMIT_BURST": "5"},
    )


def _login(url: str, username: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/auth/token",
        data={"username": username, "password": "not-the-password"},
        headers=headers or {},
        timeout=30,
    )


def test_gateway_answers_429_with_retry_after_once_the_login_limit_is_spent(
    strict_gateway: str,
) -> None:
    username = f"nobody_{uuid.uuid4().hex[:10]}"

    answers = [_login(strict_gateway, username) for _ in range(3)]

    assert [a.status_code for a in answers] == [401, 401, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    other_paths = httpx.get(f"{strict_gateway}/products/", timeout=30)
    assert other_paths.status_code == 200


def test_users_limits_logins_per_client_ip(strict_users: str, client_ip: Callable[[], str]) -> None:
    ip = client_ip()

    answers = [
        _login(strict_users, f"nobody_{uuid.uuid4().hex[:10]}", {"X-Forwarded-For": ip})
        for _ in range(7)
    ]

    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5
    assert statuses[-1] == 429
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].headers["content-type"] == "application/problem+json"


def test_users_limits_logins_per_account_across_client_ips(strict_users: str) -> None:
    username = f"target_{uuid.uuid4().hex[:10]}"

    answers = [
        _login(strict_users, username, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(1, 8)
    ]

    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5
    assert statuses[-1] == 429
    assert int(answers[-1].headers["retry-after"]) >= 1


@pytest.mark.parametrize("path", ["/products/", "/users/", "/orders/", "/auth/token"])
def test_gateway_refuses_bodies_over_one_mib_with_413(stack: RunningStack, path: str) -> None:
    too_big = b"x" * (MIB + 1)

    declared = httpx.post(
        f"{stack.url('gateway')}{path}",
        content=too_big,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    streamed = httpx.post(
        f"{stack.url('gateway')}{path}",
        content=iter([too_big[:MIB], too_big[MIB:]]),  # chunked: no Content-Length up front
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_gateway_passes_a_body_of_exactly_one_mib(stack: RunningStack) -> None:
    response = httpx.post(
        f"{stack.url('gateway')}/products/",
        content=b" " * MIB,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code in (401, 422)  # reached catalog: not an administrator, not JSON
