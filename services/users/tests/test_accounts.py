"""/users: own profile, self-or-admin access (BOLA answers 404), mass assignment, updates,
deletes, and the admin list with its filters, pagination bounds and query count."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from shop_common.db import count_queries
from shop_dev.testing import TestKeys
from users.models import User

if TYPE_CHECKING:
    from conftest import Account, AccountFactory

PROBLEM = "application/problem+json"


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_status(client: TestClient, username: str, password: str) -> int:
    response = client.post("/auth/token", data={"username": username, "password": password})
    return response.status_code


class TestOwnProfile:
    def test_me_is_one_statement_and_the_same_json_as_the_account_by_id(
        self, client: TestClient, make_account: AccountFactory, engine: Engine
    ) -> None:
        """GET /users/me reads the row with one statement (no session, no ORM) and answers exactly
        what GET /users/{id} (the ORM path) answers for the same row, every field present."""
        account = make_account(full_name='Zoë Ünïcode \u2028 "quoted"')
        client.patch("/users/me", json={"bio": "line\nbreak\ttab"}, headers=account.headers)

        with count_queries(engine) as queries:
            me = client.get("/users/me", headers=account.headers)
        by_id = client.get(f"/users/{account.id}", headers=account.headers)

        assert me.status_code == by_id.status_code == 200
        assert queries.value == 1
        assert me.headers["content-type"] == by_id.headers["content-type"] == "application/json"
        assert me.content == by_id.content
        assert set(me.json()) == {
            "id",
            "username",
            "email",
            "full_name",
            "bio",
            "is_active",
            "is_superuser",
            "created_at",
            "updated_at",
            "last_login_at",
        }
        assert (me.json()["full_name"], me.json()["bio"]) == (
            'Zoë Ünïcode \u2028 "quoted"',
            "line\nbreak\ttab",
        )

    def test_patch_me_changes_profile_fields(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.patch(
            "/users/me", json={"full_name": "New Name", "bio": "hello"}, headers=account.headers
        )

        assert response.status_code == 200
        assert (response.json()["full_name"], response.json()["bio"]) == ("New Name", "hello")
        assert response.json()["username"] == account.username

    @pytest.mark.parametrize(
        "smuggled",
        [{"is_superuser": True}, {"is_active": False}, {"id": 1}, {"hashed_password": "x"}],
    )
    def test_user_cannot_mass_assign_privileged_fields(
        self,
        client: TestClient,
        make_account: AccountFactory,
        db: Session,
        smuggled: dict[str, Any],
    ) -> None:
        account = make_account()

        via_me = client.patch("/users/me", json=smuggled | {"bio": "x"}, headers=account.headers)
        via_id = client.patch(
            f"/users/{account.id}", json=smuggled | {"bio": "x"}, headers=account.headers
        )
        via_put = client.put(
            f"/users/{account.id}",
            json={"username": account.username, "email": account.email} | smuggled,
            headers=account.headers,
        )

        for response in (via_me, via_id, via_put):
            assert response.status_code == 422
            assert response.json()["errors"][0]["type"] == "extra_forbidden"
        row = db.get_one(User, account.id)
        assert (row.is_superuser, row.is_active, row.bio) == (False, True, None)

    def test_password_change_needs_the_current_password(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        missing = client.patch(
            "/users/me", json={"password": "brand-new-password"}, headers=account.headers
        )
        wrong = client.patch(
            "/users/me",
            json={"password": "brand-new-password", "current_password": "not-it-at-all"},
            headers=account.headers,
        )

        assert missing.status_code == 422
        assert wrong.status_code == 422
        assert wrong.json()["type"] == "/problems/incorrect-password"
        assert login_status(client, account.username, account.password) == 200

    def test_password_change_with_current_password_replaces_it(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.patch(
            "/users/me",
            json={"password": "brand-new-password", "current_password": account.password},
            headers=account.headers,
        )

        assert response.status_code == 200
        assert "brand-new-password" not in response.text
        assert login_status(client, account.username, "brand-new-password") == 200
        assert login_status(client, account.username, account.password) == 401

    def test_password_change_signs_out_earlier_tokens(
        self, client: TestClient, make_account: AccountFactory, jwt_keys: TestKeys
    ) -> None:
        account = make_account()
        earlier = jwt_keys.token(account.id, account.username, iat=int(time.time()) - 5)
        assert client.get("/users/me", headers=bearer(earlier)).status_code == 200

        client.patch(
            "/users/me",
            json={"password": "brand-new-password", "current_password": account.password},
            headers=account.headers,
        )
        fresh = client.post(
            "/auth/token", data={"username": account.username, "password": "brand-new-password"}
        ).json()["access_token"]

        assert client.get("/users/me", headers=bearer(earlier)).status_code == 401
        assert client.get("/users/me", headers=bearer(fresh)).status_code == 200

    def test_renaming_to_a_taken_username_is_409(
        self, client: TestClient, make_account: AccountFactory, db: Session
    ) -> None:
        account, other = make_account(), make_account()

        response = client.patch(
            "/users/me", json={"username": other.username.upper()}, headers=account.headers
        )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/username-taken"
        assert db.get_one(User, account.id).username == account.username

    def test_null_for_a_required_field_is_422(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        for field in ("username", "email", "password"):
            response = client.patch("/users/me", json={field: None}, headers=account.headers)
            assert response.status_code == 422, field

    def test_put_replaces_the_whole_profile(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account(full_name="Old", bio="old bio")
        new_name = unique()

        response = client.put(
            f"/users/{account.id}",
            json={"username": new_name, "email": f"{new_name}@example.com"},
            headers=account.headers,
        )

        assert response.status_code == 200
        assert {k: response.json()[k] for k in ("username", "email", "full_name", "bio")} == {
            "username": new_name,
            "email": f"{new_name}@example.com",
            "full_name": None,
            "bio": None,
        }

    def test_user_can_deactivate_own_account_but_not_hard_delete_it(
        self, client: TestClient, make_account: AccountFactory, db: Session
    ) -> None:
        account = make_account()

        hard = client.delete(f"/users/{account.id}?hard=true", headers=account.headers)
        soft = client.delete(f"/users/{account.id}", headers=account.headers)

        assert hard.status_code == 403
        assert soft.status_code == 204
        assert db.get_one(User, account.id).is_active is False


class TestOtherUsersAreInvisible:
    """BOLA: another user's id answers exactly like an id that does not exist."""

    def test_other_users_account_is_404_for_every_method(
        self, client: TestClient, make_account: AccountFactory, db: Session
    ) -> None:
        me, victim = make_account(), make_account()
        calls = [
            ("GET", None),
            ("PATCH", {"bio": "pwned"}),
            ("PUT", {"username": unique(), "email": f"{unique()}@example.com"}),
            ("DELETE", None),
        ]

        for method, json_body in calls:
            other = client.request(
                method, f"/users/{victim.id}", json=json_body, headers=me.headers
            )
            missing = client.request(
                method, f"/users/{2**31 - 1}", json=json_body, headers=me.headers
            )
            assert other.status_code == missing.status_code == 404, method
            assert other.json()["detail"] == f"no user {victim.id}"
            assert other.json()["type"] == missing.json()["type"] == "/problems/user-not-found"
        row = db.get_one(User, victim.id)
        assert (row.bio, row.is_active, row.username) == (None, True, victim.username)

    def test_hard_delete_of_another_user_is_404(
        self, client: TestClient, make_account: AccountFactory, db: Session
    ) -> None:
        me, victim = make_account(), make_account()

        response = client.delete(f"/users/{victim.id}?hard=true", headers=me.headers)

        assert response.status_code == 404
        assert db.get(User, victim.id) is not None

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/users/"),
            ("GET", "/users/by-email/someone@example.com"),
            ("GET", "/users/stats/active-count"),
            ("POST", "/users/bulk"),
            ("POST", "/users/deactivate-inactive?days=30"),
            ("DELETE", "/users/inactive"),
        ],
    )
    def test_admin_endpoints_are_403_for_users_and_401_anonymously(
        self, client: TestClient, make_account: AccountFactory, method: str, path: str
    ) -> None:
        account = make_account()
        body: list[Any] | None = [] if path == "/users/bulk" else None

        as_user = client.request(method, path, json=body, headers=account.headers)
        anonymous = client.request(method, path, json=body)

        assert as_user.status_code == 403
        assert as_user.json()["type"] == "/problems/admin-only"
        assert anonymous.status_code == 401

    @pytest.mark.parametrize("user_id", ["0", "-1", str(2**31), "abc", "1.5"])
    def test_out_of_range_ids_are_422(
        self, client: TestClient, admin: Account, user_id: str
    ) -> None:
        response = client.get(f"/users/{user_id}", headers=admin.headers)

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM


class TestAdminUpdates:
    def test_admin_reads_any_user(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        response = client.get(f"/users/{account.id}", headers=admin.headers)

        assert response.status_code == 200
        assert response.json()["username"] == account.username

    def test_admin_can_promote_and_deactivate(
        self, client: TestClient, make_account: AccountFactory, admin: Account, db: Session
    ) -> None:
        account = make_account()

        response = client.patch(
            f"/users/{account.id}",
            json={"is_superuser": True, "is_active": False},
            headers=admin.headers,
        )

        assert response.status_code == 200
        assert (response.json()["is_superuser"], response.json()["is_active"]) == (True, False)
        row = db.get_one(User, account.id)
        assert (row.is_superuser, row.is_active) == (True, False)

    def test_admin_sets_a_password_without_the_current_one(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        response = client.patch(
            f"/users/{account.id}", json={"password": "set-by-the-admin"}, headers=admin.headers
        )

        assert response.status_code == 200
        assert login_status(client, account.username, "set-by-the-admin") == 200

    def test_admin_put_needs_every_field(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        partial = client.put(
            f"/users/{account.id}",
            json={"username": account.username, "email": account.email},
            headers=admin.headers,
        )
        full = client.put(
            f"/users/{account.id}",
            json={
                "username": account.username,
                "email": account.email,
                "full_name": "Set By Admin",
                "is_active": True,
                "is_superuser": False,
            },
            headers=admin.headers,
        )

        assert partial.status_code == 422
        assert {tuple(e["loc"]) for e in partial.json()["errors"]} == {
            ("body", "is_active"),
            ("body", "is_superuser"),
        }
        assert full.status_code == 200
        assert full.json()["full_name"] == "Set By Admin"

    @pytest.mark.parametrize(
        "change", [{"is_superuser": False}, {"is_active": False}, {"delete": True}]
    )
    def test_admin_cannot_lock_themselves_out(
        self, client: TestClient, make_account: AccountFactory, change: dict[str, bool]
    ) -> None:
        other_admin = make_account(superuser=True)

        if "delete" in change:
            response = client.delete(f"/users/{other_admin.id}", headers=other_admin.headers)
        else:
            response = client.patch(
                f"/users/{other_admin.id}", json=change, headers=other_admin.headers
            )

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/self-lockout"
        assert client.get("/users/", headers=other_admin.headers).status_code == 200

    def test_soft_delete_deactivates_and_hard_delete_removes(
        self, client: TestClient, make_account: AccountFactory, admin: Account, db: Session
    ) -> None:
        soft, hard = make_account(), make_account()

        soft_response = client.delete(f"/users/{soft.id}", headers=admin.headers)
        again = client.delete(f"/users/{soft.id}", headers=admin.headers)
        hard_response = client.delete(f"/users/{hard.id}?hard=true", headers=admin.headers)
        gone = client.delete(f"/users/{hard.id}?hard=true", headers=admin.headers)

        assert (soft_response.status_code, again.status_code) == (204, 204)
        assert db.get_one(User, soft.id).is_active is False
        assert hard_response.status_code == 204
        assert db.get(User, hard.id) is None
        assert gone.status_code == 404

    def test_by_email_finds_the_user_in_any_case(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        found = client.get(f"/users/by-email/{account.email.upper()}", headers=admin.headers)
        missing = client.get(f"/users/by-email/{unique()}@example.com", headers=admin.headers)
        invalid = client.get("/users/by-email/not-an-email", headers=admin.headers)

        assert found.status_code == 200
        assert found.json()["id"] == account.id
        assert missing.status_code == 404
        assert invalid.status_code == 422


class TestListUsers:
    def test_q_searches_username_email_and_full_name(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        marker = uuid.uuid4().hex[:10]
        by_name = make_account(username=f"n{marker}")
        by_email = make_account(email=f"e{marker.upper()}@example.com")
        by_full_name = make_account(full_name=f"Ada {marker} Lovelace")
        make_account()

        response = client.get(f"/users/?q={marker.upper()}", headers=admin.headers)

        assert response.status_code == 200
        assert [u["id"] for u in response.json()["items"]] == [
            by_name.id,
            by_email.id,
            by_full_name.id,
        ]
        assert response.json()["total"] == 3

    def test_q_treats_like_wildcards_literally(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        marker = uuid.uuid4().hex[:10]
        make_account(full_name=f"{marker} percent")

        wildcard = client.get(f"/users/?q={marker}%25", headers=admin.headers)
        underscore = client.get(f"/users/?q={marker[:-1]}_", headers=admin.headers)

        assert wildcard.json()["total"] == 0
        assert underscore.json()["total"] == 0

    def test_is_active_filter_and_pagination(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        marker = uuid.uuid4().hex[:10]
        accounts = [make_account(full_name=f"{marker} {i}") for i in range(3)]
        client.delete(f"/users/{accounts[1].id}", headers=admin.headers)

        active_p1 = client.get(
            f"/users/?q={marker}&is_active=true&page_size=1", headers=admin.headers
        ).json()
        active_p2 = client.get(
            f"/users/?q={marker}&is_active=true&page_size=1&page=2", headers=admin.headers
        ).json()
        inactive = client.get(f"/users/?q={marker}&is_active=false", headers=admin.headers).json()
        beyond = client.get(f"/users/?q={marker}&page=9", headers=admin.headers).json()

        assert [u["id"] for u in active_p1["items"]] == [accounts[0].id]
        assert {k: v for k, v in active_p1.items() if k != "items"} == {
            "total": 2,
            "page": 1,
            "page_size": 1,
            "total_pages": 2,
            "has_next": True,
            "has_previous": False,
        }
        assert [u["id"] for u in active_p2["items"]] == [accounts[2].id]
        assert (active_p2["has_next"], active_p2["has_previous"]) == (False, True)
        assert [u["id"] for u in inactive["items"]] == [accounts[1].id]
        assert (beyond["items"], beyond["total"]) == ([], 3)

    @pytest.mark.parametrize(
        "query",
        ["page_size=101", "page_size=0", "page=0", "page=-1", "page=x", "is_active=maybe", "q="],
    )
    def test_bad_list_parameters_are_422(
        self, client: TestClient, admin: Account, query: str
    ) -> None:
        response = client.get(f"/users/?{query}", headers=admin.headers)

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM

    @pytest.mark.parametrize("page_size", [1, 20, 100])
    def test_list_runs_three_statements_whatever_the_page_size(
        self,
        client: TestClient,
        make_account: AccountFactory,
        admin: Account,
        engine: Engine,
        page_size: int,
    ) -> None:
        """The signed-in account, the count, the page: no per-row query."""
        marker = uuid.uuid4().hex[:10]
        for _ in range(3):
            make_account(full_name=marker)

        with count_queries(engine) as queries:
            response = client.get(f"/users/?page_size={page_size}", headers=admin.headers)

        assert response.status_code == 200
        assert len(response.json()["items"]) == min(page_size, response.json()["total"])
        assert queries.value == 3


class TestPasswordsNeverLeave:
    def test_no_response_carries_a_password_or_hash(
        self, client: TestClient, make_account: AccountFactory, admin: Account, db: Session
    ) -> None:
        account = make_account()
        stored_hash = db.scalar(select(User.hashed_password).where(User.id == account.id))
        assert stored_hash is not None
        responses = [
            client.get("/users/me", headers=account.headers),
            client.get(f"/users/{account.id}", headers=account.headers),
            client.get(f"/users/{account.id}", headers=admin.headers),
            client.get(f"/users/by-email/{account.email}", headers=admin.headers),
            client.get(f"/users/?q={account.username}", headers=admin.headers),
            client.patch("/users/me", json={"bio": "b"}, headers=account.headers),
            client.post("/auth/token", data={"username": account.username, "password": "x"}),
        ]

        for response in responses:
            assert account.password not in response.text
            assert stored_hash not in response.text
            assert "$argon2" not in response.text
            assert "hashed_password" not in response.text
