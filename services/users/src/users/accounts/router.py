"""/users handlers (thin: parse, call one service function, shape the output) and /internal/users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response

from shop_common.auth import InternalCaller
from shop_common.db import SessionDep
from shop_common.schemas import Page, PageDep
from users.accounts import service
from users.accounts.schemas import (
    ActiveCount,
    DeactivatedCount,
    DeletedCount,
    Email,
    UserAdminCreate,
    UserAdminPatch,
    UserAdminReplace,
    UserCreate,
    UserRead,
    UserSelfPatch,
    UserSelfReplace,
    UserSummary,
    parse_update,
)
from users.deps import AdminAccount, AuthDep, ClientIp, CurrentAccount, SignedInAccount

router = APIRouter(prefix="/users", tags=["users"])
internal_router = APIRouter(
    prefix="/internal/users", tags=["internal"], dependencies=[InternalCaller]
)

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]
MAX_BULK = 100
MAX_SUMMARY_IDS = 100


def _body_schema(*models: type[Any]) -> dict[str, Any]:
    """OpenAPI for bodies validated by audience inside the handler (see schemas.parse_update)."""
    schemas = [m.model_json_schema() for m in models]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"anyOf": schemas}}},
        }
    }


# ---- static paths first: they must win over /users/{user_id} ---------------------------------


@router.post("/", status_code=201)
def register_user(
    body: UserCreate, session: SessionDep, auth: AuthDep, client_ip: ClientIp
) -> UserRead:
    """Rate-limited per client address and overall (429 + Retry-After); the password must pass
    the policy (422 naming the rule, see the users README)."""
    auth.registrations.check(client_ip=client_ip)
    return UserRead.model_validate(service.create_user(session, auth.passwords, auth.policy, body))


@router.get("/")
def list_users(
    session: SessionDep,
    page: PageDep,
    _admin: AdminAccount,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
) -> Page[UserRead]:
    users, total = service.list_users(
        session, page, q=q, is_active=is_active, is_superuser=is_superuser
    )
    return Page[UserRead].build([UserRead.model_validate(u) for u in users], total, page)


# async: no I/O here, so the request costs one threadpool hop in all (the dependency's). The answer
# is serialized here, once: FastAPI's response_model path would validate the model again first;
# response_model= keeps the OpenAPI schema.
@router.get("/me", response_model=UserRead)
async def read_me(me: SignedInAccount) -> Response:
    return Response(UserRead.__pydantic_serializer__.to_json(me), media_type="application/json")


@router.patch("/me", openapi_extra=_body_schema(UserSelfPatch))
def update_me(
    body: Annotated[dict[str, Any], Body()], session: SessionDep, auth: AuthDep, me: CurrentAccount
) -> UserRead:
    data = parse_update(body, admin=False, partial=True)
    return UserRead.model_validate(
        service.update_user(session, auth.passwords, auth.policy, me, me, data)
    )


@router.post("/bulk", status_code=201)
def create_users_bulk(
    body: Annotated[list[UserAdminCreate], Body(min_length=1, max_length=MAX_BULK)],
    session: SessionDep,
    auth: AuthDep,
    _admin: AdminAccount,
) -> list[UserRead]:
    users = service.create_users_bulk(session, auth.passwords, auth.policy, body)
    return [UserRead.model_validate(u) for u in users]


@router.get("/by-email/{email}")
def get_user_by_email(email: Email, session: SessionDep, _admin: AdminAccount) -> UserRead:
    return UserRead.model_validate(service.get_user_by_email(session, email))


@router.get("/stats/active-count")
def count_active_users(session: SessionDep, _admin: AdminAccount) -> ActiveCount:
    active, inactive = service.count_users_by_activity(session)
    return ActiveCount(active=active, inactive=inactive, total=active + inactive)


@router.post("/deactivate-inactive")
def deactivate_inactive_users(
    days: Annotated[int, Query(ge=1, le=36_500, description="days without a login")],
    session: SessionDep,
    admin: AdminAccount,
) -> DeactivatedCount:
    return DeactivatedCount(deactivated=service.deactivate_inactive_users(session, admin, days))


@router.delete("/inactive")
def delete_inactive_users(session: SessionDep, admin: AdminAccount) -> DeletedCount:
    return DeletedCount(deleted=service.delete_inactive_users(session, admin))


# ---- one account: self or admin; another user's id is 404 for a non-admin -----------------


@router.get("/{user_id}")
def get_user(user_id: UserId, session: SessionDep, me: CurrentAccount) -> UserRead:
    return UserRead.model_validate(service.get_user_for(session, me, user_id))


@router.put("/{user_id}", openapi_extra=_body_schema(UserSelfReplace, UserAdminReplace))
def replace_user(
    user_id: UserId,
    body: Annotated[dict[str, Any], Body()],
    session: SessionDep,
    auth: AuthDep,
    me: CurrentAccount,
) -> UserRead:
    user = service.get_user_for(session, me, user_id)
    data = parse_update(body, admin=me.is_superuser, partial=False)
    return UserRead.model_validate(
        service.update_user(session, auth.passwords, auth.policy, me, user, data)
    )


@router.patch("/{user_id}", openapi_extra=_body_schema(UserSelfPatch, UserAdminPatch))
def update_user(
    user_id: UserId,
    body: Annotated[dict[str, Any], Body()],
    session: SessionDep,
    auth: AuthDep,
    me: CurrentAccount,
) -> UserRead:
    user = service.get_user_for(session, me, user_id)
    data = parse_update(body, admin=me.is_superuser, partial=True)
    return UserRead.model_validate(
        service.update_user(session, auth.passwords, auth.policy, me, user, data)
    )


@router.delete("/{user_id}", status_code=204)
def delete_user(
    user_id: UserId,
    session: SessionDep,
    me: CurrentAccount,
    hard: Annotated[bool, Query(description="delete the row instead of deactivating")] = False,
) -> Response:
    user = service.get_user_for(session, me, user_id)
    service.delete_user(session, me, user, hard=hard)
    return Response(status_code=204)


@router.post("/{user_id}/sessions/revoke", status_code=204)
def revoke_user_sessions(user_id: UserId, session: SessionDep, _admin: AdminAccount) -> Response:
    """Sign the user out everywhere: their access tokens stop working on every service within a
    second, and their refresh tokens are revoked."""
    service.revoke_user_sessions(session, service.get_user(session, user_id))
    return Response(status_code=204)


@internal_router.get("")
def get_user_summaries(
    ids: Annotated[
        str,
        Query(
            pattern=r"^\s*\d{1,10}\s*(,\s*\d{1,10}\s*){0,99}$",
            max_length=1200,
            description=f"comma-separated user ids, at most {MAX_SUMMARY_IDS}",
        ),
    ],
    session: SessionDep,
) -> list[UserSummary]:
    """Summaries of the ids that exist (unknown ids are left out), ordered by id."""
    wanted = sorted({int(part) for part in ids.split(",")})
    valid = [i for i in wanted if 1 <= i <= 2**31 - 1]
    return [UserSummary.model_validate(u) for u in service.get_user_summaries(session, valid)]
