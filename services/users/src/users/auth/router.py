"""/auth/token (OAuth2 password flow) and the public signing keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form

from shop_common.db import SessionDep
from users.auth import service as auth_service
from users.auth.schemas import Jwks, LoginForm, TokenResponse
from users.deps import AuthDep, ClientIp

router = APIRouter(tags=["auth"])


@router.post("/auth/token")
def login_for_access_token(
    form: Annotated[LoginForm, Form()], session: SessionDep, auth: AuthDep, client_ip: ClientIp
) -> TokenResponse:
    issued = auth_service.login(
        session, auth, login=form.username, password=form.password, client_ip=client_ip
    )
    return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get("/.well-known/jwks.json")
async def get_jwks(auth: AuthDep) -> Jwks:
    return Jwks.model_validate(auth.tokens.jwks)
