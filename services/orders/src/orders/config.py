"""Settings of the orders service. Built in create_app, never at import."""

from __future__ import annotations

from pydantic import Field

from shop_common.settings import ShopSettings


class OrdersSettings(ShopSettings):
    service_name: str = "orders"

    catalog_url: str = Field(
        default="http://127.0.0.1:8002", description="Base URL of the catalog service."
    )
    users_url: str = Field(
        default="http://127.0.0.1:8001", description="Base URL of the users service."
    )
    catalog_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    catalog_read_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    catalog_retries: int = Field(
        default=2, ge=0, le=5, description="Extra attempts after the first one."
    )
    catalog_backoff_seconds: float = Field(
        default=0.1, ge=0, le=5, description="First retry delay; doubles per retry."
    )
    users_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    placing_deadline_seconds: float = Field(
        default=60, gt=0, description="An order still `placing` this long is recovered."
    )
    recovery_interval_seconds: float = Field(
        default=15, ge=0, description="Period of the recovery job; 0 disables the background job."
    )
    recovery_batch_size: int = Field(default=50, ge=1, le=1000)
    reservation_ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Passed to catalog (which accepts 1..3600); None: catalog's default.",
    )

    @property
    def catalog_call_bound_seconds(self) -> float:
        """Worst case of one catalog call with its retries: every attempt may take a full connect
        plus read timeout, and the waits between attempts double from catalog_backoff_seconds."""
        attempts = self.catalog_retries + 1
        per_attempt = self.catalog_connect_timeout_seconds + self.catalog_read_timeout_seconds
        backoff = sum(self.catalog_backoff_seconds * 2.0**i for i in range(self.catalog_retries))
        return attempts * per_attempt + backoff
