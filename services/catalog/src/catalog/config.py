"""Settings of the catalog service. Built in create_app, never at import."""

from __future__ import annotations

from shop_common.settings import ShopSettings


class CatalogSettings(ShopSettings):
    service_name: str = "catalog"
