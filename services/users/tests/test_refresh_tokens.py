"""Refresh tokens (OAuth2 refresh grant on /auth/token): rotation, reuse detection that revokes the
whole family, logout, and refusal after the account's sessions are revoked."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

if TYPE_CHECKING:
    from conftest import Account, AccountFactory

PROBLEM = "application/problem+json"


def sign_in(client: TestClient, account: Account) -> dict[str, Any]:
    response = client.post(
        "/auth/token", data={"username": account.username, "password": account.password}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(client: TestClient, token: str) -> Any:
    return client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


def me(client: TestClient, access_token: str) -> int:
    return client.get("/users/me", headers={"Authorization": f"Bearer {access_token}"}).status_code


class TestRefreshGrant:
    def test_refresh_rotates_to_a_new_pair(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        first = sign_in(client, make_account())

        response = refresh(client, first["refresh_token"])

        assert response.status_code == 200
        second = response.json()
        assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert second["refresh_token"] != first["refresh_token"]
        assert second["expires_in"] == 300
        assert me(client, second["access_token"]) == 200

    def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        first = sign_in(client, make_account())
        second = refresh(client, first["refresh_token"]).json()

        reused = refresh(client, first["refresh_token"])

        assert reused.status_code == 400
        assert reused.headers["content-type"] == PROBLEM
        assert reused.json()["type"] == "/problems/invalid-grant"
        # The legitimate holder's newer token is revoked too: the family is burnt.
        assert refresh(client, second["refresh_token"]).status_code == 400

    def test_reuse_leaves_other_sessions_of_the_user_alone(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        laptop = sign_in(client, account)
        phone = sign_in(client, account)
        refresh(client, laptop["refresh_token"])

        refresh(client, laptop["refresh_token"])  # reuse: laptop's family is revoked

        assert refresh(client, phone["refresh_token"]).status_code == 200

    def test_logout_revokes_the_family(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        first = sign_in(client, make_account())
        second = refresh(client, first["refresh_token"]).json()

        out = client.post("/auth/logout", data={"refresh_token": first["refresh_token"]})

        assert out.status_code == 204
        assert refresh(client, second["refresh_token"]).status_code == 400

    def test_logout_with_an_unknown_token_is_204(self, client: TestClient) -> None:
        response = client.post("/auth/logout", data={"refresh_token": "0" * 32 + ".nope"})

        assert response.status_code == 204

    def test_refresh_tokens_of_a_deactivated_account_are_refused(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()
        tokens = sign_in(client, account)

        client.patch(f"/users/{account.id}", json={"is_active": False}, headers=admin.headers)

        assert refresh(client, tokens["refresh_token"]).status_code == 400
        assert me(client, tokens["access_token"]) == 401

    def test_refresh_grant_needs_a_refresh_token(self, client: TestClient) -> None:
        response = client.post("/auth/token", data={"grant_type": "refresh_token"})

        assert response.status_code == 422

    def test_garbage_refresh_token_is_400(self, client: TestClient) -> None:
        for token in ("garbage", "not-a-uuid.secret", "a" * 32 + ".x", "."):
            assert refresh(client, token).status_code == 400

    def test_unknown_grant_type_is_422(self, client: TestClient) -> None:
        response = client.post(
            "/auth/token", data={"grant_type": "client_credentials", "username": "a"}
        )

        assert response.status_code == 422


class TestExpiry:
    def test_an_expired_refresh_token_is_refused_and_cleared_at_the_next_login(
        self, client: TestClient, make_account: AccountFactory, admin_engine: Engine
    ) -> None:
        account = make_account()
        tokens = sign_in(client, account)
        token_id = uuid.UUID(hex=tokens["refresh_token"].partition(".")[0])
        with admin_engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE users.refresh_tokens SET expires_at = now() - interval '1 second' "
                    "WHERE id = :id"
                ),
                {"id": token_id},
            )

        refused = refresh(client, tokens["refresh_token"])
        sign_in(client, account)

        assert refused.status_code == 400
        with admin_engine.connect() as conn:
            left = conn.scalar(
                text("SELECT count(*) FROM users.refresh_tokens WHERE id = :id"), {"id": token_id}
            )
        assert left == 0
