"""Gateway settings: upstreams, limits and timeouts. The gateway has no database."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from shop_common.settings import ShopSettings

# Path prefix (first segment) → upstream name. DESIGN §4; an unknown first segment is a 404.
DEFAULT_ROUTES: dict[str, str] = {
    "users": "users",
    "auth": "users",
    ".well-known": "users",
    "categories": "catalog",
    "products": "catalog",
    "tags": "catalog",
    "orders": "orders",
}


# Methods a prefix accepts when it is not listed in ROUTE_METHODS; anything else is a 405.
DEFAULT_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
DEFAULT_ROUTE_METHODS: dict[str, list[str]] = {
    "auth": ["POST", "OPTIONS"],
    ".well-known": ["GET", "HEAD", "OPTIONS"],
    "tags": ["GET", "HEAD", "OPTIONS"],
    "orders": ["GET", "HEAD", "POST", "PATCH", "OPTIONS"],
}


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(ShopSettings):
    service_name: str = "gateway"
    # The gateway owns no data and calls no internal endpoint: both are optional here.
    database_url: str | None = None  # type: ignore[assignment]
    internal_api_token: SecretStr | None = None  # type: ignore[assignment]

    users_url: str = "http://127.0.0.1:8001"
    catalog_url: str = "http://127.0.0.1:8002"
    orders_url: str = "http://127.0.0.1:8003"
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    route_methods: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROUTE_METHODS.items()}
    )

    redis_url: str | None = Field(
        default=None, description="Shares the login rate limit between gateway replicas when set."
    )
    redis_key_prefix: str = "shop:gateway:"
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=10)
    # Read by the request-head guard of every process (shop_common.server), listed here so the
    # gateway validates it: a request head not complete this long after its first byte is a 408.
    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request body is read whole (up to MAX_BODY_BYTES) before an upstream connection is taken.
    body_idle_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest pause between two parts of a request body: 408."
    )
    body_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest time to receive a whole request body: 408."
    )

    login_rate_limit: int = Field(
        default=10, ge=1, description="POST /auth/token per IP per window"
    )
    login_rate_window_seconds: int = Field(default=60, ge=1)
    trust_forwarded_for: bool = Field(
        default=False,
        description="Take the client IP from X-Forwarded-For (only behind a trusted proxy).",
    )

    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    upstream_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # Below uvicorn's 5 s keep-alive, so the gateway never reuses a socket the upstream is closing.
    upstream_keepalive_seconds: float = Field(default=4.0, gt=0)
    upstream_pool_size: int = Field(
        default=100, ge=1, description="Requests in flight to one upstream at most."
    )
    upstream_acquire_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Wait for a free upstream connection, then 503."
    )
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the listener is meant for the private network
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the separate /metrics listener; unset: no metrics listener.",
    )
    health_timeout_seconds: float = Field(default=1.0, gt=0)
    openapi_cache_seconds: float = Field(default=30.0, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # "errors": a line per request the gateway answers itself or that fails or is slow; each
    # upstream already writes an access line for every request, under the same request id.
    access_log: Literal["all", "errors", "off"] = "errors"
    slow_request_seconds: float = Field(default=1.0, gt=0)

    _split_origins = field_validator("cors_origins", mode="before")(_split_csv)

    @model_validator(mode="after")
    def _workers_share_the_login_limit(self) -> Self:
        # Without Redis the login limit is counted in each worker's memory: N workers would let
        # one client IP make up to N times LOGIN_RATE_LIMIT attempts per window.
        if self.web_concurrency > 1 and not self.redis_url and self.environment == "production":
            raise ValueError(
                "WEB_CONCURRENCY > 1 needs REDIS_URL in production: the login rate limit "
                "is kept per process otherwise"
            )
        return self

    def secrets_to_check(self) -> dict[str, SecretStr]:
        return {}

    def methods_for(self, prefix: str) -> frozenset[str]:
        return frozenset(m.upper() for m in self.route_methods.get(prefix, DEFAULT_METHODS))

    def upstream_urls(self) -> dict[str, str]:
        return {
            "users": self.users_url.rstrip("/"),
            "catalog": self.catalog_url.rstrip("/"),
            "orders": self.orders_url.rstrip("/"),
        }
