"""Dependencies this service adds to shop_common's: its auth context, the client IP, and the
signed-in account loaded from the database (so a deactivated account's tokens stop working)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shop_common.auth import AdminOnly, CurrentUser, InvalidToken
from shop_common.db import SessionDep
from users.auth.client_ip import client_ip
from users.auth.service import AuthContext
from users.config import UsersSettings
from users.models import User


async def _auth_context(request: Request) -> AuthContext:
    auth: AuthContext = request.app.state.auth
    return auth


AuthDep = Annotated[AuthContext, Depends(_auth_context)]


async def _client_ip(request: Request) -> str:
    settings: UsersSettings = request.app.state.settings
    return client_ip(request, settings.trusted_proxies)


ClientIp = Annotated[str, Depends(_client_ip)]


def _current_account(principal: CurrentUser, session: SessionDep) -> User:
    """The token is valid; the account must still exist and be active, and the token's version must
    be current (revocation, users.auth.sessions: read from the row, so exact and independent of
    Redis). Roles are read from the row, not the token."""
    user = session.get(User, principal.id)
    if user is None or not user.is_active:
        raise InvalidToken("the account of this token is inactive or no longer exists")
    if principal.token_version < user.token_version:
        raise InvalidToken("this session has been revoked; sign in again")
    return user


CurrentAccount = Annotated[User, Depends(_current_account)]


async def _admin_account(user: CurrentAccount) -> User:
    if not user.is_superuser:
        raise AdminOnly("this operation needs an administrator")
    return user


AdminAccount = Annotated[User, Depends(_admin_account)]
