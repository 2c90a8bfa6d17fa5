"""Every service verifies access tokens itself: algorithm pinned to EdDSA, issuer and audience
checked, exp/iat/sub/jti required, signature over the exact header and claims. Each forgery below
is refused with 401 problem+json at users, catalog and orders alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from shop_common.keys import generate_private_key_pem, load_private_key
from shop_dev.testing import RunningStack, TestKeys

if TYPE_CHECKING:
    from security.conftest import Account

pytestmark = pytest.mark.stack

ISSUER = "shop-users"
AUDIENCE = "shop"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: int, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "username": "forger",
        "is_superuser": True,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _hs256(header_alg: str, secret: bytes, kid: str, claims: dict[str, Any]) -> str:
    signing_input = _unsigned({"alg": header_alg, "typ": "JWT", "kid": kid}, claims)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _forgeries(keys: TestKeys, user_id: int) -> dict[str, str]:
    kid = keys.kid
    public_pem = load_private_key(keys.private_key_pem).public_key()
    from cryptography.hazmat.primitives import serialization

    pem = public_pem.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw_x = base64.urlsafe_b64decode(str(keys.jwk["x"]) + "==")
    other_key = load_private_key(generate_private_key_pem())
    valid = keys.token(user_id, "forger", is_superuser=True)
    header, _, signature = valid.split(".")
    return {
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, _claims(user_id)) + ".",
        "alg None": _unsigned({"alg": "None", "typ": "JWT", "kid": kid}, _claims(user_id)) + ".",
        "HS256 keyed with the public PEM": _hs256("HS256", pem, kid, _claims(user_id)),
        "HS256 keyed with the raw public key": _hs256("HS256", raw_x, kid, _claims(user_id)),
        "HS256 keyed with the JWK": _hs256(
            "HS256", json.dumps(keys.jwk).encode(), kid, _claims(user_id)
        ),
        "wrong audience": keys.token(user_id, "forger", True, aud="another-shop"),
        "wrong issuer": keys.token(user_id, "forger", True, iss="https://evil.example"),
        "expired": keys.token(
            user_id, "forger", True, iat=int(time.time()) - 7200, exp=int(time.time()) - 120
        ),
        "not yet valid": keys.token(user_id, "forger", True, nbf=int(time.time()) + 3600),
        "no exp": keys.token(user_id, "forger", True, exp=None),
        "no jti": keys.token(user_id, "forger", True, jti=None),
        "no sub": keys.token(user_id, "forger", True, sub=None),
        "sub not a number": keys.token(user_id, "forger", True, sub="alice"),
        "unknown kid": jwt.encode(
            _claims(user_id), load_private_key(keys.private_key_pem), "EdDSA", {"kid": "nope"}
        ),
        "no kid": jwt.encode(_claims(user_id), load_private_key(keys.private_key_pem), "EdDSA"),
        "another key, same kid": jwt.encode(_claims(user_id), other_key, "EdDSA", {"kid": kid}),
        "claims swapped under a valid signature": ".".join(
            [header, _b64(json.dumps(_claims(user_id, username="x")).encode()), signature]
        ),
        "signature stripped": f"{header}.{valid.split('.')[1]}.",
        "garbage": "not.a.token",
    }


Call = Callable[[httpx.Client, dict[str, str]], httpx.Response]
# One protected endpoint per service; the control call with a valid token shows it is reachable.
ENDPOINTS: dict[str, tuple[Call, int]] = {
    "users": (lambda c, h: c.get("/users/me", headers=h), 200),
    "catalog": (lambda c, h: c.post("/products/", json={}, headers=h), 422),
    "orders": (lambda c, h: c.get("/orders/", headers=h), 200),
}


@pytest.mark.parametrize("service", sorted(ENDPOINTS))
def test_forged_and_invalid_tokens_are_401_at_each_service(
    stack: RunningStack, jwt_keys: TestKeys, admin: Account, service: str
) -> None:
    call, control_status = ENDPOINTS[service]
    forgeries = _forgeries(jwt_keys, admin.id)
    with httpx.Client(base_url=stack.url(service), timeout=30) as client:
        control = call(client, admin.headers)
        refused = {
            name: call(client, {"Authorization": f"Bearer {token}"})
            for name, token in forgeries.items()
        }
        no_token = call(client, {})

    assert control.status_code == control_status, control.text
    statuses = {name: response.status_code for name, response in refused.items()}
    assert statuses == dict.fromkeys(forgeries, 401)
    for response in [*refused.values(), no_token]:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert no_token.status_code == 401
