"""Settings of the catalog service. Built in create_app, never at import."""

from __future__ import annotations

from pydantic import Field

from shop_common.settings import ShopSettings


class CatalogSettings(ShopSettings):
    service_name: str = "catalog"
    # Default lifetime of a held reservation; a request may ask for 1..3600 seconds.
    reservation_ttl_seconds: int = Field(default=900, ge=1, le=3600)
    # How often the lifespan sweeper expires overdue held reservations.
    reservation_sweep_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Reservations expired per sweeper transaction (the sweeper loops until none are left).
    reservation_sweep_batch_size: int = Field(default=100, ge=1, le=10_000)
