"""POST /auth/token and GET /.well-known/jwks.json: credentials, claims, rehash, constant cost."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from shop_dev.testing import TestKeys
from users.main import create_app
from users.models import User

if TYPE_CHECKING:
    from conftest import Account, AccountFactory, SettingsFactory

PROBLEM = "application/problem+json"


def token_form(username: str, password: str) -> dict[str, str]:
    return {"username": username, "password": password}


class TestLogin:
    def test_login_by_username_issues_a_signed_short_lived_token(
        self, client: TestClient, make_account: AccountFactory, jwt_keys: TestKeys
    ) -> None:
        account = make_account()

        response = client.post("/auth/token", data=token_form(account.username, account.password))

        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert (body["token_type"], body["expires_in"]) == ("bearer", 300)  # 5 minutes
        header = jwt.get_unverified_header(body["access_token"])
        assert (header["alg"], header["kid"]) == ("EdDSA", jwt_keys.kid)
        claims = jwt.decode(
            body["access_token"],
            key=jwt.PyJWK(jwt_keys.jwk).key,
            algorithms=["EdDSA"],
            audience="shop",
            issuer="shop-users",
        )
        assert set(claims) == {
            "sub",
            "username",
            "is_superuser",
            "iss",
            "aud",
            "exp",
            "iat",
            "jti",
            "ver",
        }
        assert (claims["sub"], claims["username"], claims["is_superuser"]) == (
            str(account.id),
            account.username,
            False,
        )
        assert claims["exp"] - claims["iat"] == 300
        assert abs(claims["iat"] - time.time()) < 60

    def test_login_by_email_in_any_case_works(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.post(
            "/auth/token", data=token_form(account.email.upper(), account.password)
        )

        assert response.status_code == 200

    def test_each_token_has_its_own_jti(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        form = token_form(account.username, account.password)

        first = client.post("/auth/token", data=form).json()["access_token"]
        second = client.post("/auth/token", data=form).json()["access_token"]

        jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)}
        assert len(jtis) == 2

    def test_login_records_last_login_but_not_a_profile_update(
        self, client: TestClient, make_account: AccountFactory, db: Session
    ) -> None:
        account = make_account()
        before = db.get_one(User, account.id)
        updated_at = before.updated_at
        db.expire_all()

        client.post("/auth/token", data=token_form(account.username, account.password))

        after = db.get_one(User, account.id)
        assert after.last_login_at is not None
        assert before.last_login_at is not None  # make_account logged in once already
        assert after.updated_at == updated_at

    def test_wrong_password_and_unknown_user_get_the_same_401(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        wrong = client.post("/auth/token", data=token_form(account.username, "wrong password"))
        unknown = client.post("/auth/token", data=token_form("nobody_here_x", "wrong password"))

        for response in (wrong, unknown):
            assert response.status_code == 401
            assert response.headers["content-type"] == PROBLEM
            assert response.headers["www-authenticate"] == "Bearer"
        assert {k: v for k, v in wrong.json().items() if k != "request_id"} == {
            k: v for k, v in unknown.json().items() if k != "request_id"
        }
        assert wrong.json()["type"] == "/problems/invalid-credentials"

    def test_inactive_user_cannot_log_in(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()
        client.delete(f"/users/{account.id}", headers=admin.headers)

        right = client.post("/auth/token", data=token_form(account.username, account.password))
        wrong = client.post("/auth/token", data=token_form(account.username, "not the password"))

        assert right.status_code == 403
        assert right.json()["type"] == "/problems/account-inactive"
        assert "access_token" not in right.text
        assert wrong.status_code == 401  # only the password's owner learns the account is inactive

    def test_unknown_user_costs_a_password_verification_too(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        """The dummy-hash path: an unknown name must not answer measurably faster than a known
        name with a wrong password (both run one Argon2 verification of ~40 ms)."""
        account = make_account()

        def fastest(username: str) -> float:
            samples = []
            for _ in range(3):
                start = time.perf_counter()
                response = client.post("/auth/token", data=token_form(username, "wrong password"))
                samples.append(time.perf_counter() - start)
                assert response.status_code == 401
            return min(samples)

        known = fastest(account.username)
        unknown = fastest("no_such_user_" + account.username[:20])

        assert unknown >= 0.5 * known

    @pytest.mark.parametrize(
        "form",
        [
            {"username": "someone"},
            {"password": "something"},
            {"username": "", "password": "something"},
            {"username": "x" * 255, "password": "something"},
            {"username": "someone", "password": "p" * 129},
            {"username": "nul\x00name", "password": "something"},
            {"username": "someone", "password": "nul\x00pw"},
            {"username": "someone", "password": "something", "grant_type": "client_credentials"},
        ],
    )
    def test_malformed_login_form_is_422(self, client: TestClient, form: dict[str, str]) -> None:
        response = client.post("/auth/token", data=form)

        assert response.status_code == 422
        assert response.headers["content-type"] == PROBLEM

    def test_json_login_body_is_422(self, client: TestClient) -> None:
        response = client.post("/auth/token", json={"username": "a", "password": "b"})

        assert response.status_code == 422


class TestRehash:
    def test_login_rehashes_when_argon2_parameters_change(
        self,
        client: TestClient,
        make_account: AccountFactory,
        settings_factory: SettingsFactory,
        db: Session,
    ) -> None:
        account = make_account()
        stronger = create_app(settings_factory(argon2_time_cost=3))

        with TestClient(stronger) as upgraded:
            response = upgraded.post(
                "/auth/token", data=token_form(account.username, account.password)
            )

        assert response.status_code == 200
        stored = db.scalar(select(User.hashed_password).where(User.id == account.id))
        assert stored is not None
        assert stored.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
        again = client.post("/auth/token", data=token_form(account.username, account.password))
        assert again.status_code == 200  # the old parameters still verify the new hash


class TestJwks:
    def test_jwks_publishes_the_public_signing_key_only(
        self, client: TestClient, jwt_keys: TestKeys
    ) -> None:
        response = client.get("/.well-known/jwks.json")

        assert response.status_code == 200
        assert response.json() == json.loads(jwt_keys.jwks_json)
        assert "d" not in response.json()["keys"][0]
