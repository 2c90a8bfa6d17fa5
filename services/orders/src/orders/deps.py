"""Dependencies this service adds to shop_common's (app.state is untyped: annotated once, here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from orders.catalog_client import CatalogClient
from orders.config import OrdersSettings
from orders.users_client import UsersClient


async def _sessionmaker(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    return factory


async def _catalog(request: Request) -> CatalogClient:
    catalog: CatalogClient = request.app.state.catalog
    return catalog


async def _users(request: Request) -> UsersClient:
    users: UsersClient = request.app.state.users
    return users


async def _settings(request: Request) -> OrdersSettings:
    settings: OrdersSettings = request.app.state.settings
    return settings


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_sessionmaker)]
CatalogDep = Annotated[CatalogClient, Depends(_catalog)]
UsersDep = Annotated[UsersClient, Depends(_users)]
SettingsDep = Annotated[OrdersSettings, Depends(_settings)]
