"""Access tokens: the Ed25519 signing key (settings, file, or a dev key made once) and the issuer."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shop_common.auth import ALGORITHM
from shop_common.keys import generate_private_key_pem, load_private_key, public_jwk
from users.config import DEV_JWT_KEY_FILE, UsersSettings
from users.models import User

log = logging.getLogger("users.tokens")


def load_signing_key(settings: UsersSettings) -> Ed25519PrivateKey:
    """The configured key; in dev mode without one, a key generated once into DEV_JWT_KEY_FILE."""
    if settings.jwt_private_key is not None:
        pem = settings.jwt_private_key.get_secret_value().encode()
    elif settings.jwt_private_key_file is not None:
        pem = settings.jwt_private_key_file.read_bytes()
    elif settings.is_dev:
        pem = _dev_key_pem(DEV_JWT_KEY_FILE)
    else:  # UsersSettings refuses this combination; kept for a settings object built otherwise
        raise RuntimeError("no JWT signing key configured")
    return load_private_key(pem)


def _dev_key_pem(path: Path) -> bytes:
    """Create the file at most once, even when several dev processes start together: the key is
    written to a temporary file and hard-linked into place, which fails if another process won."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".jwt-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
                handle.write(generate_private_key_pem())
            try:
                os.link(tmp, path)
                log.warning("generated a development JWT signing key in %s", path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    return path.read_bytes()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    def __init__(
        self, key: Ed25519PrivateKey, *, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self.jwk = public_jwk(key)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def issue(self, user: User) -> IssuedToken:
        now = int(time.time())
        claims = {
            "sub": str(user.id),
            "username": user.username,
            "is_superuser": user.is_superuser,
            "ver": user.token_version,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.jwk["kid"]})
        return IssuedToken(token, self._ttl)
