"""Object-level authorization (another user's order or account is 404, exactly like a missing
one) and mass assignment (fields a caller may not set are refused, never silently applied)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from security.conftest import Account, AccountFactory, ProductFactory

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def alices_order(stack: RunningStack, alice: Account, admin: Account) -> dict[str, Any]:
    sku = f"BOLA-{uuid.uuid4().hex[:10].upper()}"
    product = httpx.post(
        f"{stack.url('gateway')}/products/",
        json={"name": f"Bola {sku}", "sku": sku, "price": "7.00", "stock_quantity": 5},
        headers=admin.headers,
        timeout=30,
    )
    assert product.status_code == 201, product.text
    response = httpx.post(
        f"{stack.url('gateway')}/orders/",
        json={"items": [{"product_id": product.json()["id"], "quantity": 1}]},
        headers=alice.headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


@pytest.mark.parametrize("target", ["gateway", "orders"])
class TestOrdersBola:
    def test_another_users_order_is_404(
        self, stack: RunningStack, bob: Account, alices_order: dict[str, Any], target: str
    ) -> None:
        with httpx.Client(base_url=stack.url(target), headers=bob.headers, timeout=30) as client:
            missing = client.get("/orders/2147483000")
            answers = [
                client.get(f"/orders/{alices_order['id']}"),
                client.patch(
                    f"/orders/{alices_order['id']}/status", params={"new_status": "cancelled"}
                ),
                client.get(f"/orders/user/{alices_order['user_id']}"),
            ]

        assert missing.status_code == 404
        for response in answers:
            assert response.status_code == 404, response.text
            assert response.headers["content-type"] == "application/problem+json"

    def test_listing_shows_only_own_orders_even_when_filtering_by_another_user(
        self,
        stack: RunningStack,
        alice: Account,
        bob: Account,
        alices_order: dict[str, Any],
        target: str,
    ) -> None:
        with httpx.Client(base_url=stack.url(target), headers=bob.headers, timeout=30) as client:
            own = client.get("/orders/")
            filtered = client.get("/orders/", params={"user_id": alice.id})

        assert own.status_code == 200
        assert all(o["user_id"] == bob.id for o in own.json()["items"])
        assert filtered.status_code in (200, 403, 404)
        if filtered.status_code == 200:
            assert all(o["user_id"] == bob.id for o in filtered.json()["items"])

    def test_the_owner_still_sees_the_order(
        self, stack: RunningStack, alice: Account, alices_order: dict[str, Any], target: str
    ) -> None:
        response = httpx.get(
            f"{stack.url(target)}/orders/{alices_order['id']}", headers=alice.headers, timeout=30
        )

        assert response.status_code == 200
        assert response.json()["status"] == "pending"


@pytest.mark.parametrize("target", ["gateway", "users"])
class TestUsersBola:
    def test_another_users_account_is_404_for_every_method(
        self, stack: RunningStack, alice: Account, bob: Account, target: str
    ) -> None:
        with httpx.Client(base_url=stack.url(target), headers=bob.headers, timeout=30) as client:
            missing = client.get("/users/2147483000")
            answers = [
                client.get(f"/users/{alice.id}"),
                client.patch(f"/users/{alice.id}", json={"full_name": "owned"}),
                client.put(
                    f"/users/{alice.id}",
                    json={"username": alice.username, "email": "owned@example.com"},
                ),
                client.delete(f"/users/{alice.id}"),
                client.delete(f"/users/{alice.id}", params={"hard": "true"}),
            ]

        assert missing.status_code == 404
        for response in answers:
            assert response.status_code == 404, (response.request.method, response.text)
            assert response.json()["title"] == missing.json()["title"]
        me = httpx.get(f"{stack.url('users')}/users/me", headers=alice.headers, timeout=30)
        assert me.status_code == 200
        assert (me.json()["email"], me.json()["full_name"], me.json()["is_active"]) == (
            alice.email,
            None,
            True,
        )

    def test_admin_endpoints_are_403_for_a_regular_user(
        self, stack: RunningStack, bob: Account, alice: Account, target: str
    ) -> None:
        with httpx.Client(base_url=stack.url(target), headers=bob.headers, timeout=30) as client:
            answers = [
                client.get("/users/"),
                client.get(f"/users/by-email/{alice.email}"),
                client.get("/users/stats/active-count"),
                client.post("/users/deactivate-inactive", params={"days": 1}),
                client.delete("/users/inactive"),
            ]

        for response in answers:
            assert response.status_code == 403, (response.request.url, response.text)


class TestMassAssignment:
    @pytest.mark.parametrize(
        "body",
        [
            {"is_superuser": True},
            {"is_active": False},
            {"id": 1},
            {"hashed_password": "x"},
            {"created_at": "2020-01-01T00:00:00Z"},
            {"full_name": "Still Me", "is_superuser": True},
        ],
    )
    def test_regular_user_cannot_set_protected_fields_on_self(
        self,
        stack: RunningStack,
        make_account: AccountFactory,
        admin_engine: Engine,
        body: dict[str, Any],
    ) -> None:
        me = make_account("mass")
        response = httpx.patch(
            f"{stack.url('gateway')}/users/me", json=body, headers=me.headers, timeout=30
        )

        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        with admin_engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT id, is_superuser, is_active, full_name FROM users.users"
                    " WHERE username = :u"
                ),
                {"u": me.username},
            ).one()
        assert (row.id, row.is_superuser, row.is_active, row.full_name) == (
            me.id,
            False,
            True,
            None,
        )

    def test_regular_user_cannot_promote_self_through_the_id_route(
        self, stack: RunningStack, alice: Account
    ) -> None:
        with httpx.Client(base_url=stack.url("gateway"), headers=alice.headers, timeout=30) as c:
            patched = c.patch(f"/users/{alice.id}", json={"is_superuser": True})
            replaced = c.put(
                f"/users/{alice.id}",
                json={"username": alice.username, "email": alice.email, "is_superuser": True},
            )
            me = c.get("/users/me")

        assert patched.status_code == 422
        assert replaced.status_code == 422
        assert me.json()["is_superuser"] is False

    def test_registration_cannot_create_an_administrator(
        self, stack: RunningStack, admin_engine: Engine
    ) -> None:
        name = f"sneaky_{uuid.uuid4().hex[:10]}"
        response = httpx.post(
            f"{stack.url('gateway')}/users/",
            json={
                "username": name,
                "email": f"{name}@example.com",
                "password": "long-enough-password",
                "is_superuser": True,
            },
            timeout=30,
        )

        assert response.status_code == 422
        with admin_engine.connect() as conn:
            assert (
                conn.scalar(
                    text("SELECT count(*) FROM users.users WHERE username = :u"), {"u": name}
                )
                == 0
            )

    def test_order_cannot_carry_client_prices_status_or_totals(
        self, stack: RunningStack, alice: Account, new_product: ProductFactory
    ) -> None:
        product = new_product()
        item = {"product_id": product["id"], "quantity": 1}
        bodies = [
            {"items": [item | {"unit_price": "0.01"}]},
            {"items": [item], "status": "delivered"},
            {"items": [item], "total_amount": "0.01"},
            {"items": [item], "order_number": "ORD-20200101000000-AAAAAA"},
        ]
        with httpx.Client(base_url=stack.url("gateway"), headers=alice.headers, timeout=30) as c:
            answers = [c.post("/orders/", json=body) for body in bodies]
            on_behalf = c.post("/orders/", json={"items": [item], "user_id": alice.id + 1})

        assert [a.status_code for a in answers] == [422, 422, 422, 422]
        assert on_behalf.status_code == 403
        stock = httpx.get(f"{stack.url('gateway')}/products/{product['id']}", timeout=30)
        assert stock.json()["stock_quantity"] == product["stock_quantity"]
