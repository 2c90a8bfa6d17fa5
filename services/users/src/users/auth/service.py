"""Login and the token endpoint's grants: rate limit, credential check with a constant-cost path,
rehash, access token plus a refresh token (rotation in users.auth.sessions)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from users.auth import sessions
from users.auth.exceptions import AccountInactive, InvalidCredentials
from users.auth.passwords import Passwords
from users.auth.policy import PasswordPolicy
from users.auth.ratelimit import LoginLimiter, RegistrationLimiter
from users.auth.tokens import IssuedToken, TokenIssuer
from users.identity import email_key, username_key
from users.models import User


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What authentication needs, built once per app (app.state.auth)."""

    passwords: Passwords
    tokens: TokenIssuer
    limiter: LoginLimiter
    registrations: RegistrationLimiter
    policy: PasswordPolicy
    refresh_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class TokenPair:
    access: IssuedToken
    refresh_token: str


def find_user_by_login(session: Session, login: str) -> User | None:
    """`login` is a username or an email (usernames cannot contain "@"), compared by identity key."""
    if "@" in login:
        return session.scalar(select(User).where(User.email_key == email_key(login)))
    return session.scalar(select(User).where(User.username_key == username_key(login)))


def authenticate(session: Session, passwords: Passwords, user: User | None, password: str) -> User:
    """One Argon2 verification whether or not the account exists, so timing reveals nothing.
    The inactive check comes after the password: only the owner learns the account is inactive."""
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
) -> TokenPair:
    """The account is resolved before the limit is counted, so its username and its email share
    one budget; a login naming nobody is counted under its normalised text."""
    login = login.strip()  # no username or email contains spaces
    user = find_user_by_login(session, login)
    account = (
        f"user:{user.id}"
        if user is not None
        else f"login:{email_key(login) if '@' in login else username_key(login)}"
    )
    auth.limiter.check(client_ip=client_ip, account=account)
    user = authenticate(session, auth.passwords, user, password)
    refresh = sessions.create_refresh_token(session, user.id, auth.refresh_ttl_seconds)
    return TokenPair(auth.tokens.issue(user), refresh)


def refresh(factory: sessionmaker[Session], auth: AuthContext, refresh_token: str) -> TokenPair:
    user, successor = sessions.rotate_refresh_token(
        factory, refresh_token, auth.refresh_ttl_seconds
    )
    return TokenPair(auth.tokens.issue(user), successor)
