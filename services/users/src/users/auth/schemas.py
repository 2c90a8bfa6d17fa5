"""Token endpoint models (the request is an OAuth2 password form, see router.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shop_common.schemas import Input


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]


class LoginForm(Input):
    """OAuth2 password-grant form. Other OAuth2 fields (scope, client_id...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    username: Annotated[str, Field(min_length=1, max_length=254, description="username or email")]
    password: Annotated[str, Field(min_length=1, max_length=128)]
    grant_type: Annotated[str | None, Field(pattern="^password$")] = None
