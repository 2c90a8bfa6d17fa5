"""Settings of the users service. Built in create_app, never at import."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shop_common.settings import ShopSettings

# OWASP Password Storage Cheat Sheet, Argon2id minimum: 19 MiB, 2 iterations, 1 lane.
ARGON2_MIN_MEMORY_KIB = 19456
ARGON2_MIN_TIME_COST = 2
ARGON2_MIN_PARALLELISM = 1

# Dev mode only: where a signing key is generated on first start (relative to the working
# directory, gitignored). Outside dev the key must be configured.
DEV_JWT_KEY_FILE = Path(".devstack") / "jwt-ed25519.pem"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UsersSettings(ShopSettings):
    service_name: str = "users"

    first_superuser_username: str | None = None
    first_superuser_email: str | None = None
    first_superuser_password: SecretStr | None = None

    jwt_private_key: SecretStr | None = Field(
        default=None, description="Ed25519 private key (PKCS#8 PEM) that signs access tokens."
    )
    jwt_private_key_file: Path | None = Field(
        default=None, description="Path of a PEM file holding the signing key."
    )
    access_token_ttl_seconds: int = Field(
        default=300, ge=30, le=86_400, description="Lifetime of an access token (5 minutes)."
    )
    refresh_token_ttl_seconds: int = Field(
        default=14 * 86_400,
        ge=60,
        le=365 * 86_400,
        description="Lifetime of a refresh token; each use rotates it and starts a new lifetime.",
    )
    password_min_length: int = Field(
        default=8, ge=8, le=64, description="Minimum password length in characters (NFKC)."
    )

    argon2_memory_kib: int = Field(default=ARGON2_MIN_MEMORY_KIB, ge=8, le=4 * 1024 * 1024)
    argon2_time_cost: int = Field(default=ARGON2_MIN_TIME_COST, ge=1, le=100)
    argon2_parallelism: int = Field(default=ARGON2_MIN_PARALLELISM, ge=1, le=64)

    login_rate_limit_per_minute: int = Field(
        default=5, ge=0, description="Login attempts per client IP and per account; 0 disables."
    )
    login_rate_limit_burst: int = Field(default=5, ge=1)
    registration_rate_limit_per_minute: int = Field(
        default=3, ge=0, description="Registrations per client IP; 0 disables."
    )
    registration_rate_limit_burst: int = Field(default=5, ge=1)
    registration_global_rate_limit_per_minute: int = Field(
        default=300, ge=0, description="Registrations from all clients together; 0 disables."
    )
    registration_global_rate_limit_burst: int = Field(default=30, ge=1)
    password_hash_concurrency: int = Field(
        default=2, ge=1, le=64, description="Argon2 hashes computed at once by one process."
    )
    password_hash_queue_size: int = Field(
        default=8, ge=0, le=1_000, description="Hash requests allowed to wait for a slot."
    )
    password_hash_wait_seconds: float = Field(
        default=1.0, gt=0, le=30, description="Longest wait for a slot before answering 503."
    )
    trusted_proxies: Annotated[list[IpNetwork], NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.1/32")],
        description="Peers whose X-Forwarded-For is believed (comma-separated IPs or CIDRs).",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [
                ipaddress.ip_network(part.strip(), strict=False)
                for part in value.split(",")
                if part.strip()
            ]
        return value

    def secrets_to_check(self) -> dict[str, SecretStr]:
        secrets = super().secrets_to_check()
        if self.first_superuser_password is not None:
            secrets["first_superuser_password"] = self.first_superuser_password
        if self.jwt_private_key is not None:
            secrets["jwt_private_key"] = self.jwt_private_key
        return secrets

    @model_validator(mode="after")
    def _check_users_settings(self) -> Self:
        superuser = (
            self.first_superuser_username,
            self.first_superuser_email,
            self.first_superuser_password,
        )
        if any(v is not None for v in superuser) and not all(v is not None for v in superuser):
            raise ValueError(
                "FIRST_SUPERUSER_USERNAME, FIRST_SUPERUSER_EMAIL and FIRST_SUPERUSER_PASSWORD "
                "are set together or not at all"
            )
        if self.first_superuser_password is not None:
            length = len(self.first_superuser_password.get_secret_value())
            if not 8 <= length <= 128:
                raise ValueError("FIRST_SUPERUSER_PASSWORD must be 8 to 128 characters")
        if not self.is_dev and self.jwt_private_key is None and self.jwt_private_key_file is None:
            raise ValueError(
                f"JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE is required when "
                f"ENVIRONMENT={self.environment} (only dev mode generates a key)"
            )
        if self.environment == "production":
            weak = (
                self.argon2_memory_kib < ARGON2_MIN_MEMORY_KIB
                or self.argon2_time_cost < ARGON2_MIN_TIME_COST
                or self.argon2_parallelism < ARGON2_MIN_PARALLELISM
            )
            if weak:
                raise ValueError(
                    "Argon2 parameters below the OWASP minimum (19456 KiB, t=2, p=1) are "
                    "refused when ENVIRONMENT=production"
                )
        return self
