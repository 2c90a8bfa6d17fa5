"""Dependencies this service adds to shop_common's (app.state is untyped: annotated once, here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from orders.catalog_client import CatalogClient, Reserver
from orders.config import OrdersSettings
from orders.users_client import UsersClient


async def _catalog(request: Request) -> CatalogClient:
    catalog: CatalogClient = request.app.state.catalog
    return catalog


async def _reserver(request: Request) -> Reserver:
    reserver: Reserver = request.app.state.reserver
    return reserver


async def _users(request: Request) -> UsersClient:
    users: UsersClient = request.app.state.users
    return users


async def _settings(request: Request) -> OrdersSettings:
    settings: OrdersSettings = request.app.state.settings
    return settings


CatalogDep = Annotated[CatalogClient, Depends(_catalog)]
ReserverDep = Annotated[Reserver, Depends(_reserver)]
UsersDep = Annotated[UsersClient, Depends(_users)]
SettingsDep = Annotated[OrdersSettings, Depends(_settings)]
