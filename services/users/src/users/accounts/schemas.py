"""Account models. Each audience has its own input model, so a normal user cannot even express
`is_active`/`is_superuser` (extra="forbid" answers 422)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Self

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BeforeValidator,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from shop_common.schemas import Input, Output
from users.models import USERNAME_PATTERN


def _nfkc(value: object) -> object:
    return unicodedata.normalize("NFKC", value) if isinstance(value, str) else value


# NFKC first: a fullwidth copy of "alice" is the username "alice" (and then taken if alice exists).
Username = Annotated[str, BeforeValidator(_nfkc), StringConstraints(pattern=USERNAME_PATTERN)]
Email = Annotated[EmailStr, Field(max_length=254)]
# The floor of 8 here; the other rules (and a higher PASSWORD_MIN_LENGTH) in users.auth.policy.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
FullName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Bio = Annotated[str, StringConstraints(max_length=2000)]


class UserCreate(Input):
    username: Username
    email: Email
    password: Password
    full_name: FullName | None = None
    bio: Bio | None = None


class UserAdminCreate(UserCreate):
    is_active: bool = True
    is_superuser: bool = False


class _Patch(Input):
    """Omitted fields stay as they are; null is refused for fields that cannot be empty."""

    @model_validator(mode="after")
    def _no_null_for_required_columns(self) -> Self:
        nulled = [
            name
            for name in ("username", "email", "password", "is_active", "is_superuser")
            if name in self.model_fields_set and getattr(self, name, True) is None
        ]
        if nulled:
            raise ValueError(f"{', '.join(nulled)} cannot be null")
        return self


class UserSelfPatch(_Patch):
    """PATCH by the account owner. A new password needs the current one."""

    username: Username | None = None
    email: Email | None = None
    full_name: FullName | None = None
    bio: Bio | None = None
    password: Password | None = None
    current_password: Annotated[str, StringConstraints(max_length=128)] | None = None

    @model_validator(mode="after")
    def _password_change_needs_current(self) -> Self:
        if self.password is not None and self.current_password is None:
            raise ValueError("current_password is required to set a new password")
        return self


class UserSelfReplace(Input):
    """PUT by the account owner: the whole profile; omitted optional fields are cleared."""

    username: Username
    email: Email
    full_name: FullName | None = None
    bio: Bio | None = None


class UserAdminPatch(_Patch):
    username: Username | None = None
    email: Email | None = None
    full_name: FullName | None = None
    bio: Bio | None = None
    password: Password | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None


class UserAdminReplace(Input):
    username: Username
    email: Email
    full_name: FullName | None = None
    bio: Bio | None = None
    is_active: bool
    is_superuser: bool


UserUpdate = UserSelfPatch | UserSelfReplace | UserAdminPatch | UserAdminReplace

UPDATE_SCHEMAS: dict[tuple[bool, bool], type[UserUpdate]] = {
    # (by an admin, partial)
    (False, True): UserSelfPatch,
    (False, False): UserSelfReplace,
    (True, True): UserAdminPatch,
    (True, False): UserAdminReplace,
}


def parse_update(payload: dict[str, Any], *, admin: bool, partial: bool) -> UserUpdate:
    """Validate a PUT/PATCH body with the model of the caller's audience: a normal user's
    `is_superuser` is an unknown field (422), not a field that an `if` has to remember to drop."""
    try:
        return UPDATE_SCHEMAS[admin, partial].model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


class UserRead(Output):
    id: int
    username: str
    email: str
    full_name: str | None
    bio: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class UserSummary(Output):
    """What other services see (GET /internal/users)."""

    id: int
    username: str
    full_name: str | None
    is_active: bool


class ActiveCount(Output):
    active: int
    inactive: int
    total: int


class DeactivatedCount(Output):
    deactivated: int


class DeletedCount(Output):
    deleted: int
