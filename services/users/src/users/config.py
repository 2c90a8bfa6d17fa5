"""Settings of the users service. Built in create_app, never at import."""

from __future__ import annotations

from shop_common.settings import ShopSettings


class UsersSettings(ShopSettings):
    service_name: str = "users"
