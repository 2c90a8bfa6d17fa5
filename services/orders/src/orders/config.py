"""Settings of the orders service. Built in create_app, never at import."""

from __future__ import annotations

from shop_common.settings import ShopSettings


class OrdersSettings(ShopSettings):
    service_name: str = "orders"
