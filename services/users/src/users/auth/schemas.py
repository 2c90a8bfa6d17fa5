"""Token endpoint models (the request is an OAuth2 password form, see router.py)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shop_common.schemas import Input


class TokenResponse(BaseModel):
    access_token: str = Field(description="JWT (EdDSA), valid for `expires_in` seconds.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires (300 by default).")
    refresh_token: str = Field(
        description="Opaque; exchange it once with grant_type=refresh_token for a new pair. "
        "Using it a second time revokes the whole session (every token rotated from one login)."
    )


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]


class TokenForm(Input):
    """OAuth2 token request (RFC 6749): `grant_type=password` (the default) with `username` (or
    email) and `password`, or `grant_type=refresh_token` with `refresh_token`. Other OAuth2 fields
    (scope, client_id...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    grant_type: Annotated[
        Literal["password", "refresh_token"] | None,
        Field(description="`password` (default) or `refresh_token`"),
    ] = None
    username: Annotated[
        str | None, Field(min_length=1, max_length=254, description="username or email")
    ] = None
    password: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    refresh_token: Annotated[str | None, Field(min_length=1, max_length=200)] = None

    @model_validator(mode="after")
    def _fields_of_the_grant(self) -> Self:
        if self.grant_type == "refresh_token":
            if self.refresh_token is None:
                raise ValueError("grant_type=refresh_token needs refresh_token")
        elif self.username is None or self.password is None:
            raise ValueError("grant_type=password needs username and password")
        return self


class LogoutForm(Input):
    model_config = ConfigDict(extra="ignore")

    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]
