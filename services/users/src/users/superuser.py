"""The first superuser, created at start-up from FIRST_SUPERUSER_* when absent.

Idempotent and safe when several replicas start at once: INSERT ... ON CONFLICT DO NOTHING on the
case-insensitive unique indexes, so the losers of the race insert nothing. An existing account of
that name is left as it is (its password and role are never reset from the environment)."""

from __future__ import annotations

import logging
import time

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from users.auth.passwords import Passwords
from users.identity import email_key, username_key
from users.models import User

log = logging.getLogger("users.superuser")


def ensure_superuser(
    session: Session, passwords: Passwords, *, username: str, email: str, password: str
) -> bool:
    """True when this call created the account. Flushes, never commits."""
    exists = session.scalar(
        select(User.id).where(
            or_(User.username_key == username_key(username), User.email_key == email_key(email))
        )
    )
    if exists is not None:
        return False
    result = session.execute(
        insert(User)
        .values(
            username=username,
            email=email,
            username_key=username_key(username),
            email_key=email_key(email),
            hashed_password=passwords.hash(password),
            is_active=True,
            is_superuser=True,
        )
        .on_conflict_do_nothing()
        .returning(User.id)
    )
    return result.scalar() is not None


def create_first_superuser(
    factory: sessionmaker[Session],
    passwords: Passwords,
    *,
    username: str,
    email: str,
    password: str,
    attempts: int = 5,
    delay_seconds: float = 1.0,
) -> None:
    """Retries briefly while the database (or PgBouncer) is still coming up, then gives up loudly."""
    for attempt in range(1, attempts + 1):
        try:
            with factory.begin() as session:
                created = ensure_superuser(
                    session, passwords, username=username, email=email, password=password
                )
        except OperationalError:
            if attempt == attempts:
                raise
            log.warning("database unavailable for the first superuser; retry %d", attempt)
            time.sleep(delay_seconds)
            continue
        if created:
            log.info("created the first superuser %r", username)
        return
