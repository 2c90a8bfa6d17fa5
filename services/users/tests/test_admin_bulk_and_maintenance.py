"""Admin batch operations: bulk create (all or nothing), deactivating and deleting inactive
accounts, the active-count stats, and GET /internal/users behind the service token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from shop_common.db import count_queries
from shop_dev.testing import ShopDatabase
from users.models import User

if TYPE_CHECKING:
    from conftest import Account, AccountFactory

PROBLEM = "application/problem+json"


def new_user(**fields: Any) -> dict[str, Any]:
    name = f"b{uuid.uuid4().hex[:12]}"
    return {"username": name, "email": f"{name}@example.com", "password": "bulk-password"} | fields


def count_named(db: Session, names: list[str]) -> int:
    return db.scalar(select(func.count()).where(User.username.in_(names))) or 0


class TestBulkCreate:
    def test_bulk_creates_every_user_in_order(
        self, client: TestClient, admin: Account, db: Session
    ) -> None:
        items = [new_user(), new_user(full_name="Second"), new_user(is_superuser=True)]

        response = client.post("/users/bulk", json=items, headers=admin.headers)

        assert response.status_code == 201
        created = response.json()
        assert [u["username"] for u in created] == [i["username"] for i in items]
        assert [u["is_superuser"] for u in created] == [False, False, True]
        assert "bulk-password" not in response.text
        assert count_named(db, [i["username"] for i in items]) == 3
        assert (
            client.post(
                "/auth/token", data={"username": items[1]["username"], "password": "bulk-password"}
            ).status_code
            == 200
        )

    def test_duplicates_inside_the_batch_are_reported_per_item_and_nothing_is_created(
        self, client: TestClient, admin: Account, db: Session
    ) -> None:
        first = new_user()
        items = [
            first,
            new_user(),
            new_user(username=first["username"].upper()),
            new_user(email=first["email"]),
        ]

        response = client.post("/users/bulk", json=items, headers=admin.headers)

        assert response.status_code == 409
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"] == "/problems/bulk-conflict"
        assert problem["errors"] == [
            {"index": 2, "field": "username", "msg": "duplicate of item 0 in this batch"},
            {"index": 3, "field": "email", "msg": "duplicate of item 0 in this batch"},
        ]
        assert count_named(db, [i["username"] for i in items]) == 0

    def test_conflicts_with_existing_accounts_are_reported_per_item(
        self, client: TestClient, admin: Account, make_account: AccountFactory, db: Session
    ) -> None:
        existing = make_account()
        items = [
            new_user(),
            new_user(email=existing.email.upper()),
            new_user(username=existing.username),
        ]

        response = client.post("/users/bulk", json=items, headers=admin.headers)

        assert response.status_code == 409
        assert response.json()["errors"] == [
            {"index": 1, "field": "email", "msg": "already registered"},
            {"index": 2, "field": "username", "msg": "already taken"},
        ]
        assert count_named(db, [items[0]["username"], items[1]["username"]]) == 0

    def test_one_invalid_item_rejects_the_batch_with_its_index(
        self, client: TestClient, admin: Account, db: Session
    ) -> None:
        items = [new_user(), new_user(email="nope"), new_user(password="short")]

        response = client.post("/users/bulk", json=items, headers=admin.headers)

        assert response.status_code == 422
        assert [e["loc"][:3] for e in response.json()["errors"]] == [
            ["body", 1, "email"],
            ["body", 2, "password"],
        ]
        assert count_named(db, [items[0]["username"]]) == 0

    @pytest.mark.parametrize("size", [0, 101])
    def test_batch_size_is_1_to_100(self, client: TestClient, admin: Account, size: int) -> None:
        response = client.post(
            "/users/bulk", json=[new_user() for _ in range(size)], headers=admin.headers
        )

        assert response.status_code == 422

    def test_bulk_body_must_be_a_list(self, client: TestClient, admin: Account) -> None:
        response = client.post("/users/bulk", json={"users": [new_user()]}, headers=admin.headers)

        assert response.status_code == 422


def age(db: Session, user_id: int, days: int, *, logged_in: bool) -> None:
    """Move an account into the past (a state the API cannot produce)."""
    past = datetime.now(UTC) - timedelta(days=days)
    values = {"last_login_at": past} if logged_in else {"last_login_at": None, "created_at": past}
    db.execute(update(User).where(User.id == user_id).values(**values))
    db.commit()


def is_active(db: Session, user_id: int) -> bool:
    db.expire_all()
    return db.get_one(User, user_id).is_active


class TestInactiveAccounts:
    def test_deactivate_inactive_uses_last_login_or_creation(
        self, client: TestClient, admin: Account, make_account: AccountFactory, db: Session
    ) -> None:
        stale_login, never_logged_in, recent, old_admin = (
            make_account(),
            make_account(),
            make_account(),
            make_account(superuser=True),
        )
        age(db, stale_login.id, 40, logged_in=True)
        age(db, never_logged_in.id, 40, logged_in=False)
        age(db, recent.id, 10, logged_in=True)
        age(db, old_admin.id, 400, logged_in=True)

        response = client.post("/users/deactivate-inactive?days=30", headers=admin.headers)

        assert response.status_code == 200
        assert response.json() == {"deactivated": 2}
        assert [is_active(db, a.id) for a in (stale_login, never_logged_in, recent, old_admin)] == [
            False,
            False,
            True,
            True,
        ]

    @pytest.mark.parametrize("days", ["0", "-3", "36501", "x", ""])
    def test_days_must_be_a_sensible_positive_number(
        self, client: TestClient, admin: Account, days: str
    ) -> None:
        response = client.post(f"/users/deactivate-inactive?days={days}", headers=admin.headers)

        assert response.status_code == 422

    def test_delete_inactive_removes_deactivated_non_admins_only(
        self, client: TestClient, admin: Account, make_account: AccountFactory, db: Session
    ) -> None:
        gone, kept, inactive_admin = make_account(), make_account(), make_account(superuser=True)
        client.delete(f"/users/{gone.id}", headers=admin.headers)
        client.patch(
            f"/users/{inactive_admin.id}", json={"is_active": False}, headers=admin.headers
        )
        expected = db.scalar(
            select(func.count()).where(User.is_active.is_(False), User.is_superuser.is_(False))
        )

        response = client.delete("/users/inactive", headers=admin.headers)

        assert response.status_code == 200
        assert response.json() == {"deleted": expected}
        db.expire_all()
        assert db.get(User, gone.id) is None
        assert db.get(User, kept.id) is not None
        assert db.get(User, inactive_admin.id) is not None


class TestActiveCount:
    def test_counts_match_the_table_and_move_with_changes(
        self, client: TestClient, admin: Account, make_account: AccountFactory, db: Session
    ) -> None:
        before = client.get("/users/stats/active-count", headers=admin.headers).json()
        active = db.scalar(select(func.count()).where(User.is_active.is_(True))) or 0
        total = db.scalar(select(func.count()).select_from(User)) or 0

        account = make_account()
        client.delete(f"/users/{account.id}", headers=admin.headers)
        make_account()
        after = client.get("/users/stats/active-count", headers=admin.headers).json()

        assert before == {"active": active, "inactive": total - active, "total": total}
        assert after == {
            "active": before["active"] + 1,
            "inactive": before["inactive"] + 1,
            "total": before["total"] + 2,
        }


class TestInternalUsers:
    def test_summaries_of_existing_ids_in_id_order(
        self, client: TestClient, make_account: AccountFactory, shop_db: ShopDatabase
    ) -> None:
        first, second = make_account(full_name="First"), make_account()

        response = client.get(
            f"/internal/users?ids={second.id},{first.id},{2**31 - 1},{second.id}",
            headers={"X-Service-Token": shop_db.internal_api_token},
        )

        assert response.status_code == 200
        assert response.json() == [
            {"id": first.id, "username": first.username, "full_name": "First", "is_active": True},
            {"id": second.id, "username": second.username, "full_name": None, "is_active": True},
        ]

    def test_summaries_take_one_statement(
        self,
        client: TestClient,
        make_account: AccountFactory,
        shop_db: ShopDatabase,
        engine: Engine,
    ) -> None:
        ids = ",".join(str(make_account().id) for _ in range(3))

        with count_queries(engine) as queries:
            response = client.get(
                f"/internal/users?ids={ids}",
                headers={"X-Service-Token": shop_db.internal_api_token},
            )

        assert len(response.json()) == 3
        assert queries.value == 1

    @pytest.mark.parametrize("token", [None, "", "wrong-token-of-some-length"])
    def test_service_token_is_required(
        self, client: TestClient, admin: Account, token: str | None
    ) -> None:
        headers = dict(admin.headers)  # a user's bearer token is not enough
        if token is not None:
            headers["X-Service-Token"] = token

        response = client.get("/internal/users?ids=1", headers=headers)

        assert response.status_code == 403
        assert response.json()["type"] == "/problems/service-token-required"

    @pytest.mark.parametrize(
        "ids",
        ["", "a", "1,a", "1,,2", "1;2", "-1", "1.5", "99999999999", ",".join(["1"] * 101)],
    )
    def test_bad_ids_are_422(self, client: TestClient, shop_db: ShopDatabase, ids: str) -> None:
        response = client.get(
            "/internal/users",
            params={"ids": ids},
            headers={"X-Service-Token": shop_db.internal_api_token},
        )

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM

    def test_ids_are_required(self, client: TestClient, shop_db: ShopDatabase) -> None:
        response = client.get(
            "/internal/users", headers={"X-Service-Token": shop_db.internal_api_token}
        )

        assert response.status_code == 422
