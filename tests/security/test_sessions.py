"""Sessions end when they should, on every service: after a user is deactivated, deleted, demoted or
promoted, changes password, or an admin revokes their sessions, tokens issued before stop working
on users, catalog and orders (users publishes a token version in Redis; the others cache it for at
most a second). Deadlines below are generous on purpose: the tests assert the outcome, not speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from security.conftest import Account, AccountFactory

pytestmark = pytest.mark.stack

DEADLINE_SECONDS = 10.0


def eventually(check: Callable[[], int], expected: int) -> int:
    """Poll until `check()` returns `expected` or the deadline passes; return the last status."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    status = check()
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status = check()
    return status


def sign_in(gateway: httpx.Client, account: Account) -> dict[str, str]:
    response = gateway.post(
        "/auth/token", data={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def orders_status(stack: RunningStack, headers: dict[str, str]) -> int:
    return httpx.get(f"{stack.url('orders')}/orders/", headers=headers, timeout=30).status_code


def catalog_write_status(stack: RunningStack, headers: dict[str, str]) -> int:
    """401 for a revoked token, 403 for a valid non-admin one, 422 for an admin (empty body)."""
    return httpx.post(
        f"{stack.url('catalog')}/products/", json={}, headers=headers, timeout=30
    ).status_code


def users_me_status(stack: RunningStack, headers: dict[str, str]) -> int:
    return httpx.get(f"{stack.url('users')}/users/me", headers=headers, timeout=30).status_code


@pytest.mark.parametrize(
    ("change", "body"),
    [
        ("deactivated", {"is_active": False}),
        ("promoted", {"is_superuser": True}),
        ("password reset by an admin", {"password": "an0ther-Secret-pass"}),
    ],
)
def test_tokens_issued_before_an_account_change_stop_working_everywhere(
    stack: RunningStack,
    gateway: httpx.Client,
    admin: Account,
    make_account: AccountFactory,
    change: str,
    body: dict[str, object],
) -> None:
    account = make_account("revoked")
    headers = sign_in(gateway, account)
    assert orders_status(stack, headers) == 200
    assert catalog_write_status(stack, headers) == 403

    patched = gateway.patch(f"/users/{account.id}", json=body, headers=admin.headers)
    assert patched.status_code == 200, patched.text

    assert eventually(lambda: orders_status(stack, headers), 401) == 401, change
    assert eventually(lambda: catalog_write_status(stack, headers), 401) == 401, change
    assert users_me_status(stack, headers) == 401, change


def test_demoted_admin_can_no_longer_write_the_catalog_or_read_order_stats(
    stack: RunningStack, gateway: httpx.Client, admin: Account, make_account: AccountFactory
) -> None:
    account = make_account("demoted")
    promoted = gateway.patch(
        f"/users/{account.id}", json={"is_superuser": True}, headers=admin.headers
    )
    assert promoted.status_code == 200
    headers = sign_in(gateway, account)  # an admin token, issued after the promotion
    stats = f"{stack.url('orders')}/orders/stats/summary"
    assert eventually(lambda: catalog_write_status(stack, headers), 422) == 422
    assert httpx.get(stats, headers=headers, timeout=30).status_code == 200

    demoted = gateway.patch(
        f"/users/{account.id}", json={"is_superuser": False}, headers=admin.headers
    )
    assert demoted.status_code == 200

    # Each service refreshes its copy of the stamps on its own clock (<= 1 s): poll both.
    assert eventually(lambda: catalog_write_status(stack, headers), 401) == 401
    assert eventually(lambda: httpx.get(stats, headers=headers, timeout=30).status_code, 401) == 401


def test_deleted_users_token_cannot_place_orders(
    stack: RunningStack, gateway: httpx.Client, admin: Account, make_account: AccountFactory
) -> None:
    account = make_account("deleted")
    headers = sign_in(gateway, account)
    assert orders_status(stack, headers) == 200

    deleted = gateway.delete(f"/users/{account.id}?hard=true", headers=admin.headers)
    assert deleted.status_code == 204

    assert eventually(lambda: orders_status(stack, headers), 401) == 401
    placed = httpx.post(
        f"{stack.url('orders')}/orders/",
        json={"items": [{"product_id": 1, "quantity": 1}]},
        headers=headers,
        timeout=30,
    )
    assert placed.status_code == 401


def test_own_password_change_ends_other_sessions(
    stack: RunningStack, gateway: httpx.Client, make_account: AccountFactory
) -> None:
    account = make_account("pwchange")
    old = sign_in(gateway, account)

    changed = gateway.patch(
        "/users/me",
        json={"password": "brand-new-Secret-7", "current_password": account.password},
        headers=old,
    )
    assert changed.status_code == 200, changed.text

    assert eventually(lambda: orders_status(stack, old), 401) == 401


def test_admin_revokes_all_sessions_of_a_user(
    stack: RunningStack, gateway: httpx.Client, admin: Account, make_account: AccountFactory
) -> None:
    account = make_account("signout")
    headers = sign_in(gateway, account)
    refresh = gateway.post(
        "/auth/token", data={"username": account.username, "password": account.password}
    ).json()["refresh_token"]

    revoked = gateway.post(f"/users/{account.id}/sessions/revoke", headers=admin.headers)
    assert revoked.status_code == 204

    assert eventually(lambda: orders_status(stack, headers), 401) == 401
    assert catalog_write_status(stack, headers) == 401
    assert users_me_status(stack, headers) == 401
    again = gateway.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert again.status_code == 400
    fresh = sign_in(gateway, account)  # signing in again works
    assert orders_status(stack, fresh) == 200


def test_revoking_sessions_needs_an_admin(
    gateway: httpx.Client, make_account: AccountFactory
) -> None:
    account = make_account("notadmin")
    victim = make_account("victim")

    response = gateway.post(f"/users/{victim.id}/sessions/revoke", headers=account.headers)

    assert response.status_code == 403
