"""Account logic and queries. Flushes, never commits: the request session owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shop_common.auth import AdminOnly
from shop_common.db import constraint_name
from shop_common.schemas import PageParams, paginate
from users.accounts.exceptions import (
    BulkConflict,
    EmailTaken,
    IncorrectPassword,
    SelfLockout,
    UsernameTaken,
    UserNotFound,
)
from users.accounts.schemas import (
    UserAdminCreate,
    UserAdminPatch,
    UserCreate,
    UserSelfPatch,
    UserUpdate,
)
from users.auth.passwords import Passwords
from users.auth.policy import PasswordPolicy
from users.auth.sessions import forget_deleted, revoke_sessions
from users.identity import email_key, username_key
from users.models import User

_UNIQUE = {"uq_users_username_key": "username", "uq_users_email_key": "email"}


def _flush_or_conflict(session: Session, username: str, email: str) -> None:
    """Flush; a unique violation (also from a concurrent request) becomes a 409 naming the field."""
    try:
        session.flush()
    except IntegrityError as exc:
        match _UNIQUE.get(constraint_name(exc) or ""):
            case "username":
                raise UsernameTaken(
                    f"username {username!r} is already taken", field="username"
                ) from exc
            case "email":
                raise EmailTaken(f"email {email!r} is already registered", field="email") from exc
        raise


def create_user(
    session: Session, passwords: Passwords, policy: PasswordPolicy, data: UserCreate
) -> User:
    """Self-registration: always an active, non-admin account."""
    policy.check(data.password, username=data.username, email=data.email)
    user = User(
        username=data.username,
        email=data.email,
        hashed_password=passwords.hash(data.password),
        full_name=data.full_name,
        bio=data.bio,
        is_active=True,
        is_superuser=False,
    )
    session.add(user)
    _flush_or_conflict(session, data.username, data.email)
    return user


def create_users_bulk(
    session: Session,
    passwords: Passwords,
    policy: PasswordPolicy,
    items: Sequence[UserAdminCreate],
) -> list[User]:
    """All or nothing: every conflict (inside the batch or with existing accounts) is reported per
    item before anything is hashed or written."""
    for index, item in enumerate(items):
        policy.check(
            item.password,
            username=item.username,
            email=item.email,
            loc=("body", index, "password"),
        )
    problems: list[dict[str, Any]] = []
    first_seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        for field, value in (
            ("username", username_key(item.username)),
            ("email", email_key(item.email)),
        ):
            key = (field, value)
            if key in first_seen:
                problems.append(
                    {
                        "index": index,
                        "field": field,
                        "msg": f"duplicate of item {first_seen[key]} in this batch",
                    }
                )
            else:
                first_seen[key] = index
    usernames = [v for (f, v) in first_seen if f == "username"]
    emails = [v for (f, v) in first_seen if f == "email"]
    taken = session.execute(
        select(User.username_key, User.email_key).where(
            or_(User.username_key.in_(usernames), User.email_key.in_(emails))
        )
    ).all()
    taken_usernames = {row[0] for row in taken}
    taken_emails = {row[1] for row in taken}
    for index, item in enumerate(items):
        if username_key(item.username) in taken_usernames:
            problems.append({"index": index, "field": "username", "msg": "already taken"})
        if email_key(item.email) in taken_emails:
            problems.append({"index": index, "field": "email", "msg": "already registered"})
    if problems:
        problems.sort(key=lambda p: (p["index"], p["field"]))
        raise BulkConflict(
            f"{len({p['index'] for p in problems})} of {len(items)} users conflict; nothing was created",
            errors=problems,
        )
    users = [
        User(
            **item.model_dump(exclude={"password"}),
            hashed_password=passwords.hash(item.password),
        )
        for item in items
    ]
    session.add_all(users)
    try:
        session.flush()
    except IntegrityError as exc:  # someone registered one of these names since the check
        if constraint_name(exc) in _UNIQUE:
            raise BulkConflict(
                "a user in the batch was registered concurrently; nothing was created",
                errors=[],
            ) from exc
        raise
    return users


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _users_query(q: str | None, is_active: bool | None, is_superuser: bool | None) -> Select[User]:
    stmt = select(User).order_by(User.id)
    if q:
        pattern = f"%{_escape_like(q)}%"
        stmt = stmt.where(
            or_(
                User.username.ilike(pattern, escape="\\"),
                User.email.ilike(pattern, escape="\\"),
                User.full_name.ilike(pattern, escape="\\"),
            )
        )
    if is_active is not None:
        stmt = stmt.where(User.is_active.is_(is_active))
    if is_superuser is not None:
        stmt = stmt.where(User.is_superuser.is_(is_superuser))
    return stmt


def list_users(
    session: Session,
    params: PageParams,
    *,
    q: str | None = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
) -> tuple[list[User], int]:
    return paginate(session, _users_query(q, is_active, is_superuser), params)


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user {user_id}")
    return user


def get_user_for(session: Session, acting: User, user_id: int) -> User:
    """Another user's account is 404 to a non-admin, exactly like one that does not exist."""
    if acting.id == user_id:
        return acting
    if not acting.is_superuser:
        raise UserNotFound(f"no user {user_id}")
    return get_user(session, user_id)


def get_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email_key == email_key(email)))
    if user is None:
        raise UserNotFound("no user with this email")
    return user


def get_user_summaries(session: Session, ids: Sequence[int]) -> list[User]:
    return list(session.scalars(select(User).where(User.id.in_(ids)).order_by(User.id)))


def update_user(
    session: Session,
    passwords: Passwords,
    policy: PasswordPolicy,
    acting: User,
    user: User,
    data: UserUpdate,
) -> User:
    """Apply a validated update model; PATCH models carry only the fields the client sent.
    A password change, (de)activation or a role change revokes the user's sessions: tokens issued
    before carry the old password's trust or the old role."""
    partial = isinstance(data, UserSelfPatch | UserAdminPatch)
    changes = data.model_dump(exclude_unset=partial, exclude={"current_password", "password"})
    new_password: str | None = getattr(data, "password", None)
    if isinstance(data, UserSelfPatch) and new_password is not None:
        matches, _ = passwords.verify(data.current_password or "", user.hashed_password)
        if not matches:
            raise IncorrectPassword("the current password is incorrect", field="current_password")
    if (
        acting.id == user.id
        and acting.is_superuser
        and (changes.get("is_active") is False or changes.get("is_superuser") is False)
    ):
        raise SelfLockout("you cannot deactivate or demote your own administrator account")
    if new_password is not None:
        policy.check(
            new_password,
            username=changes.get("username", user.username),
            email=changes.get("email", user.email),
        )
    revoke = new_password is not None or any(
        field in changes and changes[field] != getattr(user, field)
        for field in ("is_active", "is_superuser")
    )
    for field, value in changes.items():
        setattr(user, field, value)
    if new_password is not None:
        user.hashed_password = passwords.hash(new_password)
        user.password_changed_at = datetime.now(UTC)
    _flush_or_conflict(session, user.username, user.email)
    if revoke:
        revoke_sessions(session, [user.id])
    return user


def delete_user(session: Session, acting: User, user: User, *, hard: bool) -> None:
    """Soft delete deactivates the account (idempotent); hard delete (admins) removes the row."""
    if hard and not acting.is_superuser:
        raise AdminOnly("only administrators can delete an account permanently")
    if acting.id == user.id and acting.is_superuser:
        raise SelfLockout("you cannot delete your own administrator account")
    if hard:
        session.delete(user)
        session.flush()
        forget_deleted(session, [user.id])
    else:
        was_active = user.is_active
        user.is_active = False
        session.flush()
        if was_active:
            revoke_sessions(session, [user.id])


def revoke_user_sessions(session: Session, user: User) -> None:
    """An administrator signs a user out everywhere (idempotent: each call revokes what exists)."""
    revoke_sessions(session, [user.id])


def deactivate_inactive_users(session: Session, acting: User, days: int) -> int:
    """Deactivate non-admin accounts with no login (or, never logged in, no creation) for `days`."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    result = session.execute(
        update(User)
        .where(
            User.is_active.is_(True),
            User.is_superuser.is_(False),
            User.id != acting.id,
            func.coalesce(User.last_login_at, User.created_at) < cutoff,
        )
        .values(is_active=False)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    ids = [int(i) for i in result.scalars()]
    revoke_sessions(session, ids)
    return len(ids)


def delete_inactive_users(session: Session, acting: User) -> int:
    """Hard-delete every deactivated non-admin account."""
    result = session.execute(
        delete(User)
        .where(User.is_active.is_(False), User.is_superuser.is_(False), User.id != acting.id)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    ids = [int(i) for i in result.scalars()]
    forget_deleted(session, ids)
    return len(ids)


def count_users_by_activity(session: Session) -> tuple[int, int]:
    """(active, inactive) in one statement."""
    row = session.execute(
        select(
            func.count().filter(User.is_active.is_(True)),
            func.count().filter(User.is_active.is_(False)),
        )
    ).one()
    return int(row[0]), int(row[1])
