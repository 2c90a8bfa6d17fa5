"""/auth/token (OAuth2 password and refresh-token grants), /auth/logout, the public signing keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response

from shop_common.db import SessionDep, TransactionFactoryDep
from users.auth import service as auth_service
from users.auth import sessions
from users.auth.schemas import Jwks, LogoutForm, TokenForm, TokenResponse
from users.deps import AuthDep, ClientIp

router = APIRouter(tags=["auth"])


@router.post("/auth/token")
def login_for_access_token(
    form: Annotated[TokenForm, Form()],
    session: SessionDep,
    factory: TransactionFactoryDep,
    auth: AuthDep,
    client_ip: ClientIp,
) -> TokenResponse:
    """Sign in (`grant_type=password`) or rotate a refresh token (`grant_type=refresh_token`).
    Both answer a new access token (5 minutes by default) and a new refresh token."""
    if form.grant_type == "refresh_token":
        assert form.refresh_token is not None  # noqa: S101 - TokenForm's validator
        # Its own transactions: a reused token's family is revoked and committed, then 400.
        pair = auth_service.refresh(factory, auth, form.refresh_token)
    else:
        pair = auth_service.login(
            session,
            auth,
            login=form.username or "",
            password=form.password or "",
            client_ip=client_ip,
        )
    return TokenResponse(
        access_token=pair.access.access_token,
        expires_in=pair.access.expires_in,
        refresh_token=pair.refresh_token,
    )


@router.post("/auth/logout", status_code=204)
def logout(form: Annotated[LogoutForm, Form()], session: SessionDep) -> Response:
    """Revoke the session of this refresh token (it and every token rotated from the same login).
    Access tokens already issued expire on their own (5 minutes by default); to end them at once,
    an administrator revokes all the user's sessions. Unknown tokens answer 204 too (RFC 7009)."""
    sessions.revoke_refresh_family(session, form.refresh_token)
    return Response(status_code=204)


@router.get("/.well-known/jwks.json")
async def get_jwks(auth: AuthDep) -> Jwks:
    return Jwks.model_validate(auth.tokens.jwks)
