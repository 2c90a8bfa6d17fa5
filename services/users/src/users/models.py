"""ORM models of the users service; every relationship is lazy="raise"."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, validates

from users.db import Base
from users.identity import email_key, username_key

__all__ = ["USERNAME_PATTERN", "Base", "RefreshToken", "User"]

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,50}$"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # Uniqueness on the identity keys (users.identity: NFKC + casefold, IDNA domain): "Alice",
        # "alice" and its fullwidth copy are one account. Named so a violation maps to a field.
        Index("uq_users_username_key", "username_key", unique=True),
        Index("uq_users_email_key", "email_key", unique=True),
        CheckConstraint(f"username ~ '{USERNAME_PATTERN}'", name="username_format"),
        CheckConstraint("position('@' in email) > 1", name="email_format"),
    )
    # Server-generated columns (ids, timestamps) come back through RETURNING on INSERT/UPDATE, so
    # building a response after a flush costs no extra SELECT.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declarative hook

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(254))
    username_key: Mapped[str] = mapped_column(String(200))
    email_key: Mapped[str] = mapped_column(String(400))
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    bio: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_superuser: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Access tokens carry the version they were issued under (`ver`); revoking the sessions
    # increments it, and tokens of an older version are refused (shop_common.revocation).
    token_version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    sessions_revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @validates("username")
    def _set_username_key(self, _key: str, value: str) -> str:
        self.username_key = username_key(value)
        return value

    @validates("email")
    def _set_email_key(self, _key: str, value: str) -> str:
        self.email_key = email_key(value)
        return value


class RefreshToken(Base):
    """One refresh token; a family is the chain of rotations that started at one login. The client
    holds `<id>.<secret>`; only a SHA-256 of the secret is stored."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_user_id", "user_id"),
        Index("ix_refresh_tokens_family_id", "family_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.users.id", ondelete="CASCADE"))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
