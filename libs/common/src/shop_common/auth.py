"""Access-token verification shared by every service, and the internal service-token check.

Tokens are EdDSA (Ed25519) JWTs issued by the users service and published as a JWKS. Verification
pins the algorithm, issuer and audience and requires exp/iat/sub/jti; keys are cached and refetched
when a token names an unknown `kid` (at most once per `min_refresh_seconds`).

Claims are read strictly: `sub` is a decimal string naming a positive 32-bit id, `is_superuser` a
JSON boolean, `iat`/`ver` integers (a bool is not an integer here); anything else is a 401. With
revocation stamps configured (shop_common.revocation), a token whose `ver` is below the user's
published version is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import jwt
from fastapi import Depends, Header, Request
from fastapi.security import HTTPBearer
from jwt.algorithms import OKPAlgorithm

from shop_common.errors import Forbidden, Unauthorized
from shop_common.revocation import RevocationStamps

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud", "jti")
MAX_USER_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    username: str
    is_superuser: bool
    token_id: str
    issued_at: int = 0  # the token's `iat` (epoch seconds)
    token_version: int = 0  # the token's `ver`: the user's session version when it was issued

    def can_act_for(self, user_id: int) -> bool:
        return self.is_superuser or self.id == user_id


class AdminOnly(Forbidden):
    title = "Administrator rights required"


class InvalidToken(Unauthorized):
    title = "Invalid or expired token"


class KeySource(Protocol):
    async def get(self, kid: str) -> Any | None: ...


class StaticKeys:
    """Public keys known up front (the users service verifies with its own keys)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = _parse_jwks(jwks)

    async def get(self, kid: str) -> Any | None:
        return self._keys.get(kid)


class RemoteJwks:
    """Fetches the issuer's JWKS over HTTP; caches it; refetches on an unknown kid, rate-limited."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any]]],
        *,
        cache_seconds: float = 300,
        min_refresh_seconds: float = 10,
    ) -> None:
        self._fetch = fetch
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> Any | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._cache_seconds
        if kid not in self._keys or stale:
            async with self._lock:
                if now - self._fetched_at > self._min_refresh and (kid not in self._keys or stale):
                    try:
                        self._keys = _parse_jwks(await self._fetch())
                    except Exception:  # noqa: BLE001 - an unreachable issuer keeps the cached keys
                        if not self._keys:
                            raise InvalidToken("signing keys are unavailable") from None
                    finally:
                        self._fetched_at = time.monotonic()
        return self._keys.get(kid)


def _parse_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for entry in jwks.get("keys", []):
        if entry.get("kty") == "OKP" and entry.get("crv") == "Ed25519" and entry.get("kid"):
            keys[entry["kid"]] = OKPAlgorithm.from_jwk(json.dumps(entry))
    return keys


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Strict reading of verified claims; InvalidToken for any claim of the wrong type."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit() or sub[0] == "0":
        raise InvalidToken("the token subject is not a user id")
    user_id = int(sub) if len(sub) <= 10 else 0
    if not 1 <= user_id <= MAX_USER_ID:
        raise InvalidToken("the token subject is not a user id")
    is_superuser = claims.get("is_superuser", False)
    username = claims.get("username", "")
    version = claims.get("ver", 0)
    jti = claims.get("jti")
    iat = claims.get("iat")
    if not isinstance(is_superuser, bool):
        raise InvalidToken("the is_superuser claim must be a boolean")
    if not isinstance(username, str) or not isinstance(jti, str):
        raise InvalidToken("username and jti claims must be strings")
    if not isinstance(iat, int) or not _is_int(version) or version < 0 or not _is_int(iat):
        raise InvalidToken("ver and iat claims must be non-negative integers")
    return Principal(
        id=user_id,
        username=username,
        is_superuser=is_superuser,
        token_id=jti,
        issued_at=iat,
        token_version=version,
    )


@dataclass(frozen=True, slots=True)
class _Verified:
    key: Any  # the key object that verified the signature
    expires_at: int  # the `exp` claim, read as PyJWT reads it
    principal: Principal


class TokenVerifier:
    """Verifies with one PyJWT instance whose options (required claims) are fixed here, once.

    Every token users issues under one key has the same header segment, so the key id read from a
    header segment is remembered (at most MAX_REMEMBERED_HEADERS of them): the header is then parsed
    once per token, by PyJWT's decode, which checks all of it again (alg pinned, kid, crit) and
    verifies the signature over it. Only which key to try comes from the remembered entry.

    A client presents the same access token on every request until it expires, so the outcome of a
    full verification is remembered too (by the token's SHA-256, at most MAX_REMEMBERED_TOKENS,
    oldest dropped first), and only for tokens that passed. Everything that verification decides is
    fixed by the token's bytes and the key, except expiry: a remembered token counts only while the
    kid still resolves to the very key object that verified it, and its `exp` is checked again,
    with the same leeway, on every request. `iat` (not in the future) cannot turn false later. The
    revocation check (stamps) runs on every request, remembered or not."""

    MAX_REMEMBERED_HEADERS = 64
    MAX_REMEMBERED_TOKENS = 4096

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int = 5,
        stamps: RevocationStamps | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._stamps = stamps  # None: no revocation check (users checks its own database)
        self._jwt = jwt.PyJWT(options={"require": list(REQUIRED_CLAIMS)})
        self._jws = jwt.PyJWS(algorithms=[ALGORITHM])
        self._algorithms = [ALGORITHM]
        self._kids: dict[str, str] = {}  # header segment -> its kid, for headers that passed
        self._verified: dict[bytes, _Verified] = {}  # SHA-256 of a token that passed -> outcome
        self._clock = clock

    def _key_id(self, token: str) -> str:
        segment = token.partition(".")[0]
        kid = self._kids.get(segment)
        if kid is not None:
            return kid
        try:
            header = self._jws.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unexpected token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        if len(self._kids) >= self.MAX_REMEMBERED_HEADERS:  # bounded whatever clients send
            self._kids.clear()
        self._kids[segment] = kid
        return kid

    def _decode(self, token: str, key: Any) -> _Verified:
        """The full verification: signature, pinned alg/iss/aud, required and strict claims."""
        try:
            claims = self._jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken() from None
        # PyJWT compared int(exp) with the clock (it refused anything int() cannot read).
        return _Verified(key, int(claims["exp"]), principal_from_claims(claims))

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        if len(self._verified) >= self.MAX_REMEMBERED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[digest] = verified

    async def verify(self, token: str) -> Principal:
        key = await self._keys.get(self._key_id(token))
        if key is None:
            raise InvalidToken("unknown signing key")
        digest = hashlib.sha256(token.encode()).digest()
        verified = self._verified.get(digest)
        if verified is None or verified.key is not key:
            verified = self._decode(token, key)
            self._remember(digest, verified)
        elif verified.expires_at <= self._clock() - self._leeway:  # PyJWT's own test for `exp`
            del self._verified[digest]
            raise InvalidToken()
        principal = verified.principal
        if self._stamps is not None and principal.token_version < await self._stamps.min_version(
            principal.id
        ):
            raise InvalidToken("this session has been revoked; sign in again")
        return principal


class _BearerPrincipal(HTTPBearer):
    """The request's signed-in user: its bearer token, verified. HTTPBearer's own parsing (and
    OpenAPI security scheme, under the same name), in ONE dependency instead of HTTPBearer plus a
    second one taking its result: FastAPI's bookkeeping costs tens of µs per dependency per
    request, and every signed-in request pays it (docs/PERFORMANCE.md)."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("a bearer token is required")
        verifier: TokenVerifier = request.app.state.token_verifier
        return await verifier.verify(credentials.credentials)


CurrentUser = Annotated[
    Principal, Depends(_BearerPrincipal(auto_error=False, scheme_name="HTTPBearer"))
]


async def _admin(user: CurrentUser) -> Principal:
    if not user.is_superuser:
        raise AdminOnly("this operation needs an administrator")
    return user


AdminUser = Annotated[Principal, Depends(_admin)]


class ServiceTokenRequired(Forbidden):
    title = "Service token missing or invalid"


async def _service_token(
    request: Request,
    x_service_token: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Internal endpoints need the shared service token (constant-time comparison)."""
    expected: str = request.app.state.settings.internal_api_token.get_secret_value()
    if x_service_token is None or not hmac.compare_digest(
        x_service_token.encode(), expected.encode()
    ):
        raise ServiceTokenRequired("internal endpoints need a valid X-Service-Token header")


InternalCaller = Depends(_service_token)
