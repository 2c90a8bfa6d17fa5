"""Sessions: refresh tokens (rotation, reuse detection, logout) and revocation of every session
of a user, published to the other services through Redis (shop_common.revocation).

Revoking increments `users.token_version` in the request's transaction and revokes the user's
refresh tokens; the new version is published to Redis only after that transaction commits (a
rolled-back request publishes nothing). When Redis cannot be written, the database still holds
the truth: users itself checks the version on its own rows, the pending stamps are retried every
`retry_seconds`, and every `resync_seconds` all stamps changed within STAMP_TTL_SECONDS are written
again (which also repairs a Redis that restarted empty). Meanwhile catalog and orders fail closed
(see shop_common.revocation)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import delete, event, select, update
from sqlalchemy.orm import Session, sessionmaker

from shop_common.errors import BadRequest
from shop_common.revocation import DELETED_VERSION, STAMP_TTL_SECONDS, StampPublisher
from users.models import RefreshToken, User

log = logging.getLogger("users.sessions")

_PENDING = "revoked_versions"  # Session.info key: {user_id: version} to publish after commit
_RESYNC_LIMIT = 10_000


class InvalidGrant(BadRequest):
    """RFC 6749 §5.2 `invalid_grant`: unknown, expired, revoked or reused refresh token."""

    title = "Invalid refresh token"


# ---- revocation -------------------------------------------------------------------------------


def _queue(session: Session, versions: dict[int, int]) -> None:
    pending: dict[int, int] = session.info.setdefault(_PENDING, {})
    for user_id, version in versions.items():
        pending[user_id] = max(version, pending.get(user_id, -1))


def revoke_sessions(session: Session, user_ids: Iterable[int]) -> None:
    """Every token issued so far to these users stops working: access tokens by version (users at
    once, the other services within a second of the commit), refresh tokens in the database."""
    ids = sorted(set(user_ids))
    if not ids:
        return
    rows = session.execute(
        update(User)
        .where(User.id.in_(ids))
        .values(token_version=User.token_version + 1, sessions_revoked_at=datetime.now(UTC))
        .returning(User.id, User.token_version)
        .execution_options(synchronize_session="fetch")
    ).all()
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id.in_(ids), RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    _queue(session, {int(user_id): int(version) for user_id, version in rows})


def forget_deleted(session: Session, user_ids: Iterable[int]) -> None:
    """Deleted accounts: publish a version no token has (their rows and refresh tokens are gone)."""
    _queue(session, dict.fromkeys(user_ids, DELETED_VERSION))


class RevocationPublisher:
    """Publishes stamps after commit; retries what failed; periodically rewrites recent ones."""

    def __init__(
        self,
        publisher: StampPublisher | None,
        factory: sessionmaker[Session],
        *,
        retry_seconds: float = 0.5,
        resync_seconds: float = 10.0,
    ) -> None:
        self._publisher = publisher
        self._factory = factory
        self._retry = retry_seconds
        self._resync = resync_seconds
        self._pending: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        event.listen(self._factory, "after_commit", self._after_commit)
        event.listen(self._factory, "after_soft_rollback", self._after_rollback)
        if self._publisher is not None:
            self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)
            self._thread.start()

    def close(self) -> None:
        event.remove(self._factory, "after_commit", self._after_commit)
        event.remove(self._factory, "after_soft_rollback", self._after_rollback)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _after_rollback(self, session: Session, _previous: object) -> None:
        session.info.pop(_PENDING, None)

    def _after_commit(self, session: Session) -> None:
        versions: dict[int, int] | None = session.info.pop(_PENDING, None)
        if versions:
            self.publish(versions)

    def publish(self, versions: dict[int, int]) -> bool:
        if self._publisher is None:
            return True
        try:
            self._publisher.publish(versions)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "could not publish %d revocation stamp(s): %s; retrying", len(versions), exc
            )
            with self._lock:
                for user_id, version in versions.items():
                    self._pending[user_id] = max(version, self._pending.get(user_id, -1))
            return False
        return True

    def resync(self) -> bool:
        """Write again every stamp changed within the stamps' lifetime (from the database)."""
        since = datetime.now(UTC) - timedelta(seconds=STAMP_TTL_SECONDS)
        with self._factory() as session:
            rows = session.execute(
                select(User.id, User.token_version)
                .where(User.sessions_revoked_at > since)
                .order_by(User.sessions_revoked_at.desc())
                .limit(_RESYNC_LIMIT)
            ).all()
        return self.publish({int(i): int(v) for i, v in rows}) if rows else True

    def _run(self) -> None:
        next_resync = 0.0
        elapsed = 0.0
        while not self._stop.wait(self._retry):
            elapsed += self._retry
            with self._lock:
                pending, self._pending = self._pending, {}
            if pending:
                self.publish(pending)
            if elapsed >= next_resync:
                next_resync = elapsed + self._resync
                try:
                    self.resync()
                except Exception:
                    log.warning("revocation resync failed", exc_info=True)


# ---- refresh tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedRefresh:
    token: str
    user_id: int


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_refresh_token(
    session: Session, user_id: int, ttl_seconds: int, family_id: uuid.UUID | None = None
) -> str:
    """A new token of `family_id` (a new family: a login, which also deletes the user's expired
    tokens, so the table holds only live ones and their recent history). Flushes, never commits."""
    if family_id is None:
        session.execute(
            delete(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.expires_at < datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
    token_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=token_id,
            family_id=family_id or uuid.uuid4(),
            user_id=user_id,
            secret_hash=_digest(secret),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()
    return f"{token_id.hex}.{secret}"


def _find(session: Session, token: str, *, lock: bool) -> RefreshToken | None:
    token_id_text, _, secret = token.partition(".")
    try:
        token_id = uuid.UUID(hex=token_id_text)
    except ValueError:
        return None
    stmt = select(RefreshToken).where(RefreshToken.id == token_id)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None or not hmac.compare_digest(row.secret_hash, _digest(secret)):
        return None
    return row


def _revoke_family(session: Session, family_id: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )


def rotate_refresh_token(
    factory: sessionmaker[Session], token: str, ttl_seconds: int
) -> tuple[User, str]:
    """Exchange a refresh token for its successor (rotation). A token used twice means it leaked:
    the whole family is revoked (committed) and the grant refused. Concurrent uses of one token are
    serialised by a row lock, so exactly one of them wins."""
    now = datetime.now(UTC)
    reused = False
    user: User | None = None
    with factory.begin() as session:
        row = _find(session, token, lock=True)
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise InvalidGrant("the refresh token is invalid, expired or revoked")
        if row.used_at is not None:
            _revoke_family(session, row.family_id)
            reused = True
        else:
            user = session.get(User, row.user_id)
            if user is None or not user.is_active:
                raise InvalidGrant("the account of this refresh token is inactive")
            row.used_at = now
            successor = create_refresh_token(session, user.id, ttl_seconds, row.family_id)
    if reused:
        log.warning("refresh token reused; revoked its family (user %d)", row.user_id)
        raise InvalidGrant("the refresh token was already used; its session has been revoked")
    assert user is not None  # noqa: S101 - set on the only path that reaches here
    return user, successor


def revoke_refresh_family(session: Session, token: str) -> None:
    """Logout: the token's whole family stops working. Unknown tokens are ignored (RFC 7009)."""
    row = _find(session, token, lock=False)
    if row is not None:
        _revoke_family(session, row.family_id)
