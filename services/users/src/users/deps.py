"""Dependencies this service adds to shop_common's: its auth context, the client IP, and the
signed-in account loaded from the database (so a deactivated account's tokens stop working)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request
from sqlalchemy import bindparam, select

from shop_common.auth import AdminOnly, CurrentUser, InvalidToken, Principal
from shop_common.db import ReaderDep, SessionDep, compiled_sql, fetch_one_async
from users.accounts.schemas import UserRead
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


class _AccountState(Protocol):
    @property
    def is_active(self) -> bool: ...
    @property
    def token_version(self) -> int: ...


_Account = TypeVar("_Account", bound=_AccountState)


def _checked(principal: Principal, account: _Account | None) -> _Account:
    """The token is valid; the account must still exist and be active, and the token's version must
    be current (revocation, users.auth.sessions: read from the row, so exact and independent of
    Redis). Roles are read from the row, not the token."""
    if account is None or not account.is_active:
        raise InvalidToken("the account of this token is inactive or no longer exists")
    if principal.token_version < account.token_version:
        raise InvalidToken("this session has been revoked; sign in again")
    return account


def _current_account(principal: CurrentUser, session: SessionDep) -> User:
    return _checked(principal, session.get(User, principal.id))


# CurrentAccount: the account as an ORM object of the request's session (SessionDep), for handlers
# that write: they change that very object (PATCH /users/me) or decide a write from it, in the
# transaction that makes the write. Costs the session's two threadpool hops, this one and a
# transaction; a handler that only shows the account uses SignedInAccount below.
CurrentAccount = Annotated[User, Depends(_current_account)]

_SIGNED_IN_COLUMNS = (*UserRead.model_fields, "token_version")
_SIGNED_IN_ACCOUNT = compiled_sql(
    select(*(getattr(User, name) for name in _SIGNED_IN_COLUMNS)).where(User.id == bindparam("id"))
)


async def _signed_in_account(principal: CurrentUser, reader: ReaderDep) -> UserRead:
    """The same checks as CurrentAccount on ONE statement in AUTOCOMMIT (ReaderDep) on the event
    loop (fetch_one_async): no thread, one round trip, no transaction. The row is one snapshot, so
    the activity and the token version it checks are those of the columns it answers with."""
    row = await fetch_one_async(reader, _SIGNED_IN_ACCOUNT, {"id": principal.id})
    account = (
        None if row is None else SimpleNamespace(**dict(zip(_SIGNED_IN_COLUMNS, row, strict=True)))
    )
    return UserRead.model_validate(_checked(principal, account))


# SignedInAccount: the account as the API shows it, for a handler that only shows it (an async
# handler: then the request runs no thread at all): GET /users/me.
SignedInAccount = Annotated[UserRead, Depends(_signed_in_account)]


async def _admin_account(user: CurrentAccount) -> User:
    if not user.is_superuser:
        raise AdminOnly("this operation needs an administrator")
    return user


AdminAccount = Annotated[User, Depends(_admin_account)]
