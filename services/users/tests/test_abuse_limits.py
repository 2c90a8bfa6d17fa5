"""Limits on what costs an Argon2 hash: registrations per client IP and overall, a bounded number of
hashes at once (503 + Retry-After instead of starving other endpoints), and the login limit keyed
on the resolved account, so its username and its email share one budget."""

from __future__ import annotations

import ipaddress
import random
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from users.auth.passwords import HashGate, PasswordHashingBusy
from users.main import create_app

if TYPE_CHECKING:
    from conftest import AccountFactory, SettingsFactory

PROBLEM = "application/problem+json"


def random_ip() -> str:
    return str(ipaddress.IPv4Address(random.randint(0x0A000001, 0x0AFFFFFE)))


def registration(ip: str) -> tuple[dict[str, Any], dict[str, str]]:
    name = f"lim_{uuid.uuid4().hex[:12]}"
    body = {"username": name, "email": f"{name}@example.com", "password": f"pw-{uuid.uuid4()}"}
    return body, {"X-Forwarded-For": ip}


@pytest.fixture
def app_with(settings_factory: SettingsFactory) -> Iterator[Any]:
    """Build apps with low limits; every app's lifespan ends with the test."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> TestClient:

        client = TestClient(create_app(settings_factory(**overrides)), client=("127.0.0.1", 1))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def hold(gate: HashGate) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Occupy one slot of `gate` until the returned `release` event is set."""
    inside, release = threading.Event(), threading.Event()

    def work() -> None:
        inside.set()
        release.wait(30)

    holder = threading.Thread(target=gate.run, args=(work,))
    holder.start()
    assert inside.wait(30)
    return holder, inside, release


class TestRegistrationLimits:
    def test_one_address_gets_429_after_its_burst_and_others_still_register(
        self, app_with: Any
    ) -> None:
        client: TestClient = app_with(
            registration_rate_limit_per_minute=2, registration_rate_limit_burst=2
        )
        ip = random_ip()

        statuses = [
            client.post("/users/", json=b, headers=h).status_code
            for b, h in (registration(ip) for _ in range(3))
        ]
        other = client.post(
            "/users/", json=registration(random_ip())[0], headers={"X-Forwarded-For": random_ip()}
        )

        assert statuses == [201, 201, 429]
        assert other.status_code == 201

    def test_limited_registration_is_problem_json_with_retry_after(self, app_with: Any) -> None:
        client: TestClient = app_with(
            registration_rate_limit_per_minute=1, registration_rate_limit_burst=1
        )
        ip = random_ip()
        client.post("/users/", json=registration(ip)[0], headers={"X-Forwarded-For": ip})

        limited = client.post("/users/", json=registration(ip)[0], headers={"X-Forwarded-For": ip})

        assert limited.status_code == 429
        assert limited.headers["content-type"] == PROBLEM
        assert limited.json()["type"] == "/problems/registration-rate-limited"
        assert int(limited.headers["retry-after"]) >= 1

    def test_overall_limit_applies_across_addresses(self, app_with: Any) -> None:
        client: TestClient = app_with(
            registration_global_rate_limit_per_minute=2,
            registration_global_rate_limit_burst=2,
        )

        statuses = [
            client.post("/users/", json=b, headers=h).status_code
            for b, h in (registration(random_ip()) for _ in range(3))
        ]

        assert statuses == [201, 201, 429]


class TestHashingGate:
    def test_a_full_gate_refuses_at_once_when_nobody_may_wait(self) -> None:
        gate = HashGate(concurrency=1, queue_size=0, wait_seconds=30)
        holder, _inside, release = hold(gate)
        try:
            with pytest.raises(PasswordHashingBusy):
                gate.run(lambda: None)
        finally:
            release.set()
            holder.join(30)
        assert gate.run(lambda: 42) == 42  # the slot is free again

    def test_a_waiter_gives_up_after_the_deadline(self) -> None:
        gate = HashGate(concurrency=1, queue_size=1, wait_seconds=0.05)
        holder, _inside, release = hold(gate)
        try:
            with pytest.raises(PasswordHashingBusy):
                gate.run(lambda: None)
        finally:
            release.set()
            holder.join(30)

    def test_busy_hashing_answers_503_and_other_endpoints_keep_working(
        self, app_with: Any, make_account: AccountFactory
    ) -> None:
        account = make_account()
        client: TestClient = app_with(password_hash_concurrency=1, password_hash_queue_size=0)
        app: FastAPI = client.app  # type: ignore[assignment]
        gate: HashGate = app.state.auth.passwords.gate
        holder, _inside, release = hold(gate)
        try:
            login = client.post(
                "/auth/token", data={"username": account.username, "password": account.password}
            )
            signup = client.post("/users/", json=registration(random_ip())[0])
            profile = client.get("/users/me", headers=account.headers)
        finally:
            release.set()
            holder.join(30)

        assert login.status_code == 503
        assert login.headers["retry-after"] == "1"
        assert login.headers["content-type"] == PROBLEM
        assert signup.status_code == 503
        assert profile.status_code == 200


class TestLoginLimitPerAccount:
    def test_username_and_email_share_one_budget(
        self, app_with: Any, make_account: AccountFactory
    ) -> None:
        client: TestClient = app_with(login_rate_limit_per_minute=5, login_rate_limit_burst=3)
        account = make_account()

        def attempt(login: str) -> int:
            return client.post(
                "/auth/token",
                data={"username": login, "password": "wrong password"},
                headers={"X-Forwarded-For": random_ip()},
            ).status_code

        statuses = [attempt(account.username), attempt(account.email), attempt(account.username)]

        assert statuses == [401, 401, 401]
        assert attempt(account.email.upper()) == 429
