"""Token verification: pinned algorithm, issuer, audience, expiry; JWKS cache and refresh."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from shop_common.auth import (
    AdminUser,
    CurrentUser,
    InternalCaller,
    RemoteJwks,
    StaticKeys,
    TokenVerifier,
    _parse_jwks,
)
from shop_common.errors import Unauthorized
from shop_common.keys import generate_private_key_pem, load_private_key, public_jwk
from shop_dev.testing import TestKeys

ClientFactory = Callable[..., TestClient]


def _verifier(keys: TestKeys) -> TokenVerifier:
    return TokenVerifier(
        StaticKeys(json.loads(keys.jwks_json)), issuer="shop-users", audience="shop"
    )


def _verify(keys: TestKeys, token: str) -> Any:
    return asyncio.run(_verifier(keys).verify(token))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_valid_token_yields_the_principal(jwt_keys: TestKeys) -> None:
    principal = _verify(jwt_keys, jwt_keys.token(42, "alice", is_superuser=True))

    assert (principal.id, principal.username, principal.is_superuser) == (42, "alice", True)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "evil"},
        {"exp": int(time.time()) - 60},
        {"jti": None},
        {"sub": None},
        {"sub": "not-a-number"},
    ],
    ids=["audience", "issuer", "expired", "no-jti", "no-sub", "bad-sub"],
)
def test_tokens_with_wrong_claims_are_refused(jwt_keys: TestKeys, claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        _verify(jwt_keys, jwt_keys.token(1, **claims))


def test_alg_none_is_refused(jwt_keys: TestKeys) -> None:
    payload = jwt.decode(jwt_keys.token(1), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': jwt_keys.kid})}.{_b64(payload)}."

    with pytest.raises(Unauthorized):
        _verify(jwt_keys, unsigned)


def test_hs256_signed_with_the_public_key_is_refused(jwt_keys: TestKeys) -> None:
    payload = jwt.decode(jwt_keys.token(1, is_superuser=True), options={"verify_signature": False})
    header = {"alg": "HS256", "kid": jwt_keys.kid, "typ": "JWT"}
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    import hashlib
    import hmac

    secret = jwt_keys.jwk["x"].encode()
    signature = (
        base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )

    with pytest.raises(Unauthorized):
        _verify(jwt_keys, f"{signing_input}.{signature}")


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(jwt_keys: TestKeys) -> None:
    other = load_private_key(generate_private_key_pem())
    payload = jwt.decode(jwt_keys.token(1), options={"verify_signature": False})
    forged = jwt.encode(payload, other, algorithm="EdDSA", headers={"kid": jwt_keys.kid})

    with pytest.raises(Unauthorized):
        _verify(jwt_keys, forged)


def test_tampered_payload_is_refused(jwt_keys: TestKeys) -> None:
    header, _, signature = jwt_keys.token(1).split(".")
    payload = jwt.decode(jwt_keys.token(1), options={"verify_signature": False})
    payload["is_superuser"] = True

    with pytest.raises(Unauthorized):
        _verify(jwt_keys, f"{header}.{_b64(payload)}.{signature}")


def test_a_verifier_that_has_seen_a_header_still_checks_every_token(jwt_keys: TestKeys) -> None:
    """The verifier remembers the key id of a header segment it has parsed; every token with that
    same header is still verified in full (signature, claims)."""
    verifier = _verifier(jwt_keys)
    valid = jwt_keys.token(1)
    header, _, signature = valid.split(".")
    payload = jwt.decode(valid, options={"verify_signature": False})
    other = load_private_key(generate_private_key_pem())
    forged = jwt.encode(payload, other, algorithm="EdDSA", headers={"kid": jwt_keys.kid})
    refused = {
        "tampered": f"{header}.{_b64({**payload, 'is_superuser': True})}.{signature}",
        "other key": forged,
        "expired": jwt_keys.token(1, exp=int(time.time()) - 60),
        "audience": jwt_keys.token(1, aud="someone-else"),
        "no signature": f"{header}.{valid.split('.')[1]}.",
        "garbage payload": f"{header}.!!!!.{signature}",
    }
    assert {t.split(".")[0] for t in refused.values()} == {header}  # one header segment for all

    async def scenario() -> list[str]:
        assert (await verifier.verify(valid)).id == 1
        outcomes = []
        for name, token in refused.items():
            try:
                await verifier.verify(token)
            except Unauthorized:
                outcomes.append(name)
        assert (await verifier.verify(valid)).id == 1
        return outcomes

    assert asyncio.run(scenario()) == list(refused)


def test_a_refused_header_is_refused_every_time(jwt_keys: TestKeys) -> None:
    verifier = _verifier(jwt_keys)
    payload = jwt.decode(jwt_keys.token(1), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': jwt_keys.kid})}.{_b64(payload)}."

    async def scenario() -> int:
        refusals = 0
        for _ in range(2):
            with pytest.raises(Unauthorized):
                await verifier.verify(unsigned)
            refusals += 1
        return refusals

    assert asyncio.run(scenario()) == 2


def test_remembered_headers_are_bounded_whatever_clients_send(jwt_keys: TestKeys) -> None:
    verifier = _verifier(jwt_keys)
    payload = _b64({"sub": "1"})
    tokens = [
        f"{_b64({'alg': 'EdDSA', 'kid': f'kid-{i}'})}.{payload}.c2ln"
        for i in range(TokenVerifier.MAX_REMEMBERED_HEADERS * 3)
    ]

    async def scenario() -> None:
        for token in tokens:
            with pytest.raises(Unauthorized):
                await verifier.verify(token)

    asyncio.run(scenario())

    assert 0 < len(verifier._kids) <= TokenVerifier.MAX_REMEMBERED_HEADERS


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class _SwappableKeys:
    """A key source whose key under a kid can be replaced (a rotated or withdrawn key)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.keys: dict[str, Any] = _parse_jwks(jwks)

    async def get(self, kid: str) -> Any | None:
        return self.keys.get(kid)


def test_a_remembered_token_still_expires(jwt_keys: TestKeys) -> None:
    """A token verified once is not verified again in full, but its `exp` is read on every request
    with the same leeway as PyJWT's (refused when exp <= now - leeway)."""
    clock = _Clock()
    verifier = TokenVerifier(
        StaticKeys(json.loads(jwt_keys.jwks_json)),
        issuer="shop-users",
        audience="shop",
        leeway_seconds=5,
        clock=clock,
    )
    exp = int(time.time()) + 60
    token = jwt_keys.token(7, exp=exp)

    async def scenario() -> list[str]:
        outcomes = []
        for now in (clock.now, exp + 4.5, exp + 5):
            clock.now = now
            try:
                outcomes.append(f"ok {(await verifier.verify(token)).id}")
            except Unauthorized:
                outcomes.append("refused")
        return outcomes

    assert asyncio.run(scenario()) == ["ok 7", "ok 7", "refused"]


def test_a_remembered_token_is_verified_again_when_its_key_changes(jwt_keys: TestKeys) -> None:
    keys = _SwappableKeys(json.loads(jwt_keys.jwks_json))
    verifier = TokenVerifier(keys, issuer="shop-users", audience="shop")
    token = jwt_keys.token(8)
    other = public_jwk(load_private_key(generate_private_key_pem()))

    async def scenario() -> list[str]:
        outcomes = [f"ok {(await verifier.verify(token)).id}"]
        keys.keys = _parse_jwks({"keys": [{**other, "kid": jwt_keys.kid}]})  # same kid, new key
        for _ in range(2):
            try:
                outcomes.append(f"ok {(await verifier.verify(token)).id}")
            except Unauthorized:
                outcomes.append("refused")
        keys.keys = _parse_jwks(json.loads(jwt_keys.jwks_json))  # the same key, a new object
        outcomes.append(f"ok {(await verifier.verify(token)).id}")
        return outcomes

    assert asyncio.run(scenario()) == ["ok 8", "refused", "refused", "ok 8"]


class _SmallVerifier(TokenVerifier):
    MAX_REMEMBERED_TOKENS = 3


def test_remembered_tokens_are_bounded_and_the_dropped_ones_still_verify(
    jwt_keys: TestKeys,
) -> None:
    verifier = _SmallVerifier(
        StaticKeys(json.loads(jwt_keys.jwks_json)), issuer="shop-users", audience="shop"
    )
    tokens = [jwt_keys.token(user_id) for user_id in range(1, 11)]

    async def scenario() -> list[int]:
        first = [(await verifier.verify(token)).id for token in tokens]
        again = [(await verifier.verify(token)).id for token in tokens]
        return first + again

    assert asyncio.run(scenario()) == list(range(1, 11)) * 2
    assert len(verifier._verified) == 3


def test_remote_jwks_is_cached_and_refetched_once_for_an_unknown_kid(jwt_keys: TestKeys) -> None:
    rotated = load_private_key(generate_private_key_pem())
    published: list[dict[str, Any]] = [jwt_keys.jwk]
    calls: list[float] = []

    async def fetch() -> dict[str, Any]:
        calls.append(time.monotonic())
        return {"keys": list(published)}

    async def scenario() -> list[int]:
        verifier = TokenVerifier(
            RemoteJwks(fetch, min_refresh_seconds=0), issuer="shop-users", audience="shop"
        )
        await verifier.verify(jwt_keys.token(1))
        await verifier.verify(jwt_keys.token(2))
        first = len(calls)
        published.append(public_jwk(rotated))  # the issuer rotates keys
        claims = jwt.decode(jwt_keys.token(3), options={"verify_signature": False})
        token = jwt.encode(
            claims, rotated, algorithm="EdDSA", headers={"kid": public_jwk(rotated)["kid"]}
        )
        principal = await verifier.verify(token)
        return [first, len(calls), principal.id]

    assert asyncio.run(scenario()) == [1, 2, 3]


router = APIRouter()


@router.get("/me")
async def me(user: CurrentUser) -> dict[str, int]:
    return {"id": user.id}


@router.get("/admin")
async def admin(user: AdminUser) -> dict[str, int]:
    return {"id": user.id}


@router.get("/internal/ping", dependencies=[InternalCaller])
async def internal_ping() -> dict[str, str]:
    return {"pong": "ok"}


def test_dependencies_enforce_bearer_admin_and_service_token(
    client_for: ClientFactory, jwt_keys: TestKeys
) -> None:
    client = client_for(router)
    user = {"Authorization": f"Bearer {jwt_keys.token(5)}"}
    admin_ = {"Authorization": f"Bearer {jwt_keys.token(6, is_superuser=True)}"}

    assert client.get("/me").status_code == 401
    assert client.get("/me").headers["www-authenticate"] == "Bearer"
    assert client.get("/me", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    assert client.get("/me", headers=user).json() == {"id": 5}
    assert client.get("/admin", headers=user).status_code == 403
    assert client.get("/admin", headers=admin_).json() == {"id": 6}
    assert client.get("/internal/ping").status_code == 403
    assert client.get("/internal/ping", headers={"X-Service-Token": "wrong"}).status_code == 403


def test_internal_route_accepts_the_configured_service_token(
    client_for: ClientFactory, jwt_keys: TestKeys
) -> None:
    client = client_for(router, internal_api_token="a-service-token-of-enough-length")

    response = client.get(
        "/internal/ping", headers={"X-Service-Token": "a-service-token-of-enough-length"}
    )

    assert response.json() == {"pong": "ok"}
