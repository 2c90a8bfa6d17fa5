"""Settings base shared by every service: read from the environment, fail fast, refuse placeholders."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that ship in .env.example and in the dev launcher. Outside dev mode they are refused,
# so a deployment that forgot to set a real secret does not start.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "dev-internal-token", "secret", ""})

Environment = Literal["dev", "test", "production"]

# Worker processes per service start. Past a handful, more replicas serve better than more workers
# (each worker has its own engine, HTTP pools, caches and limiter memory).
MAX_WEB_CONCURRENCY = 16


class ShopSettings(BaseSettings):
    """Fields every service has. Environment variables are the field names in UPPER_SNAKE, unprefixed:
    each process has its own environment (see docs/CONFIGURATION.md)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Environment = "production"
    service_name: str = "shop"
    database_url: str = Field(
        description="Runtime URL, through PgBouncer (postgresql+psycopg2://role:pw@host:6432/shop)."
    )
    migrations_database_url: str | None = Field(
        default=None, description="Direct PostgreSQL URL used by Alembic; never through PgBouncer."
    )
    db_pool_size: int = Field(
        default=0,
        ge=0,
        le=100,
        description="0 (default): NullPool, PgBouncer pools. N > 0: an in-process QueuePool of N "
        "connections, for a direct PostgreSQL URL (used by bench/ to compare the two).",
    )
    internal_api_token: SecretStr = Field(description="Shared secret for /internal/ endpoints.")
    web_concurrency: int = Field(
        default=1,
        ge=1,
        le=MAX_WEB_CONCURRENCY,
        description="Worker processes of this service (uvicorn's WEB_CONCURRENCY). Read by "
        "shop_common.server.serve before the app exists; validated here too, so a worker refuses "
        "a value the supervisor would have refused.",
    )
    log_level: str = "INFO"
    log_json: bool = True
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry instrumentation, for an OpenTelemetry SDK you "
        "configure (providers or OTEL_* exporters). Off (the default; metrics are Prometheus): "
        "requests skip FastAPI's per-request look for a configured provider (~10 µs each).",
    )

    # Token verification (every service verifies JWTs itself).
    jwt_issuer: str = "shop-users"
    jwt_audience: str = "shop"
    jwks_url: str | None = Field(
        default=None,
        description="Where to fetch the users service's JWKS; None in the users service.",
    )
    jwks_json: str | None = Field(
        default=None,
        description="A JWKS given inline (pinned keys); used instead of JWKS_URL when set.",
    )
    jwks_cache_seconds: int = Field(default=300, ge=1)

    # Session revocation: users publishes a per-user token version in Redis; every service that
    # verifies tokens reads it (docs/CONFIGURATION.md, services/users/README.md "Tokens").
    redis_url: str | None = Field(
        default=None,
        description="Redis holding session-revocation stamps (users writes, every service reads) "
        "and the users service's rate limits. Unset: no revocation check (a warning at start-up).",
    )
    redis_key_prefix: str = Field(
        default="shop:",
        max_length=100,
        description="Prefix of every Redis key; the same value in users, catalog and orders.",
    )
    revocation_cache_seconds: float = Field(
        default=1.0,
        gt=0,
        le=1.0,
        description="How long a service reuses a user's revocation stamp before asking Redis.",
    )

    @property
    def is_dev(self) -> bool:
        return self.environment == "dev"

    def secrets_to_check(self) -> dict[str, SecretStr]:
        """Subclasses add their own secrets; all of them are refused as placeholders outside dev."""
        return {"internal_api_token": self.internal_api_token}

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if self.is_dev:
            return self
        bad = [
            name
            for name, value in self.secrets_to_check().items()
            if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
            or len(value.get_secret_value()) < 16
        ]
        if bad:
            raise ValueError(
                f"placeholder or too short secret(s) {', '.join(sorted(bad))} are refused "
                f"when ENVIRONMENT={self.environment}; set real values (>= 16 characters)"
            )
        return self
