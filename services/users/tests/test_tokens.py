"""Bearer tokens on users endpoints: expiry, tampering, algorithm confusion, and accounts whose
tokens must stop working (deactivated, deleted)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from shop_dev.testing import TestKeys

if TYPE_CHECKING:
    from conftest import Account, AccountFactory

PROBLEM = "application/problem+json"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def claims_for(account: Account, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(account.id),
        "username": account.username,
        "is_superuser": False,
        "iss": "shop-users",
        "aud": "shop",
        "iat": now,
        "exp": now + 900,
        "jti": "x" * 32,
    } | overrides


def assert_401(client: TestClient, token: str) -> None:
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == "Bearer"


class TestTokenVerification:
    def test_valid_token_reads_own_profile(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()

        response = client.get("/users/me", headers=account.headers)

        assert response.status_code == 200
        assert (response.json()["id"], response.json()["username"]) == (
            account.id,
            account.username,
        )

    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer not.a.jwt", "Bearer a.b"],
    )
    def test_missing_or_malformed_authorization_is_401(
        self, client: TestClient, header: str | None
    ) -> None:
        headers = {} if header is None else {"Authorization": header}

        response = client.get("/users/me", headers=headers)

        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM

    def test_expired_token_is_401(
        self, client: TestClient, make_account: AccountFactory, jwt_keys: TestKeys
    ) -> None:
        account = make_account()
        now = int(time.time())

        assert_401(
            client, jwt_keys.token(account.id, account.username, iat=now - 960, exp=now - 60)
        )

    @pytest.mark.parametrize(
        "overrides",
        [{"aud": "another-audience"}, {"iss": "someone-else"}, {"exp": None}, {"jti": None}],
        ids=["wrong-aud", "wrong-iss", "no-exp", "no-jti"],
    )
    def test_token_with_wrong_or_missing_claims_is_401(
        self,
        client: TestClient,
        make_account: AccountFactory,
        jwt_keys: TestKeys,
        overrides: dict[str, Any],
    ) -> None:
        account = make_account()

        assert_401(client, jwt_keys.token(account.id, account.username, **overrides))

    def test_alg_none_token_is_401(self, client: TestClient, make_account: AccountFactory) -> None:
        account = make_account()
        admin_claims = claims_for(account, is_superuser=True)

        for alg in ("none", "None", "NONE"):
            assert_401(client, unsigned({"alg": alg, "typ": "JWT"}, admin_claims) + ".")

    def test_hs256_signed_with_the_public_key_is_401(
        self, client: TestClient, make_account: AccountFactory, jwt_keys: TestKeys
    ) -> None:
        """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
        account = make_account()
        public = jwt.PyJWK(jwt_keys.jwk).key
        secrets_tried = [
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
            json.dumps(jwt_keys.jwk).encode(),
        ]
        for secret in secrets_tried:
            signing_input = unsigned(
                {"alg": "HS256", "typ": "JWT", "kid": jwt_keys.kid}, claims_for(account)
            )
            signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            assert_401(client, f"{signing_input}.{b64(signature)}")

    def test_payload_changed_after_signing_is_401(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        header, _, signature = account.token.split(".")
        forged = b64(json.dumps(claims_for(account, is_superuser=True)).encode())

        assert_401(client, f"{header}.{forged}.{signature}")

    def test_token_signed_by_another_key_under_our_kid_is_401(
        self, client: TestClient, make_account: AccountFactory, jwt_keys: TestKeys
    ) -> None:
        account = make_account()
        token = jwt.encode(
            claims_for(account),
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": jwt_keys.kid},
        )

        assert_401(client, token)

    def test_token_with_unknown_kid_is_401(
        self, client: TestClient, make_account: AccountFactory
    ) -> None:
        account = make_account()
        token = jwt.encode(
            claims_for(account),
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": "someone-elses"},
        )

        assert_401(client, token)


class TestTokensOfDisabledAccounts:
    def test_deactivated_users_token_stops_working(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()
        assert client.get("/users/me", headers=account.headers).status_code == 200

        client.delete(f"/users/{account.id}", headers=admin.headers)

        assert_401(client, account.token)

    def test_deleted_users_token_stops_working(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        account = make_account()

        client.delete(f"/users/{account.id}?hard=true", headers=admin.headers)

        assert_401(client, account.token)

    def test_token_of_a_user_that_never_existed_is_401(
        self, client: TestClient, jwt_keys: TestKeys
    ) -> None:
        assert_401(client, jwt_keys.token(2**31 - 1, "ghost", is_superuser=True))

    def test_demoted_admins_token_stops_working_at_once(
        self, client: TestClient, make_account: AccountFactory, admin: Account
    ) -> None:
        other_admin = make_account(superuser=True)  # signed in after the promotion
        headers = other_admin.headers
        assert jwt.decode(other_admin.token, options={"verify_signature": False})["is_superuser"]
        assert client.get("/users/", headers=headers).status_code == 200

        client.patch(
            f"/users/{other_admin.id}", json={"is_superuser": False}, headers=admin.headers
        )

        assert client.get("/users/", headers=headers).status_code == 401  # the session is revoked
        again = client.post(
            "/auth/token",
            data={"username": other_admin.username, "password": other_admin.password},
        ).json()["access_token"]
        assert (
            client.get("/users/", headers={"Authorization": f"Bearer {again}"}).status_code == 403
        )
