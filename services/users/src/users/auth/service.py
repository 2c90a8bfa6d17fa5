"""Login: rate limit, credential check with a constant-cost path, rehash, token."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from users.auth.exceptions import AccountInactive, InvalidCredentials
from users.auth.passwords import Passwords
from users.auth.ratelimit import LoginLimiter
from users.auth.tokens import IssuedToken, TokenIssuer
from users.models import User


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What login needs, built once per app (app.state.auth)."""

    passwords: Passwords
    tokens: TokenIssuer
    limiter: LoginLimiter


def find_user_by_login(session: Session, login: str) -> User | None:
    """`login` is a username or an email; usernames cannot contain "@", so one index decides."""
    column = User.email if "@" in login else User.username
    return session.scalar(select(User).where(func.lower(column) == login.lower()))


def authenticate(session: Session, passwords: Passwords, login: str, password: str) -> User:
    """One Argon2 verification whether or not the account exists, so timing reveals nothing.
    The inactive check comes after the password: only the owner learns the account is inactive."""
    user = find_user_by_login(session, login)
    if user is None:
        passwords.verify_dummy(password)
        raise InvalidCredentials("incorrect username or password")
    matches, new_hash = passwords.verify(password, user.hashed_password)
    if not matches:
        raise InvalidCredentials("incorrect username or password")
    if not user.is_active:
        raise AccountInactive("this account is inactive")
    values: dict[str, object] = {"last_login_at": func.now(), "updated_at": User.updated_at}
    if new_hash is not None:  # Argon2 parameters changed since this hash was made
        values["hashed_password"] = new_hash
    # Core UPDATE that keeps updated_at: a login is not a profile change.
    session.execute(
        update(User)
        .where(User.id == user.id)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    return user


def login(
    session: Session, auth: AuthContext, *, login: str, password: str, client_ip: str
) -> IssuedToken:
    auth.limiter.check(client_ip=client_ip, login=login)
    user = authenticate(session, auth.passwords, login, password)
    return auth.tokens.issue(user)
