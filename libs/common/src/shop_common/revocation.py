"""Session revocation stamps: a per-user token version that users publishes in Redis and every
service checks when it verifies an access token.

Each access token carries `ver`, the user's token version when it was issued. Revoking a user's
sessions (deactivation, deletion, role change, password change, an admin's revoke) increments the
version in users' database and publishes it under `<prefix>tokens:version:<user id>`; a token whose
`ver` is lower is refused. Keys expire after STAMP_TTL_SECONDS, longer than any access token lives,
so an expired stamp can only concern tokens that have expired too.

Readers keep a stamp for at most `cache_seconds` (<= 1 s), so a revocation reaches every service
within that time. While Redis cannot be read they fail closed: a stamp older than the cache is not
trusted, and the request answers 503 with Retry-After (never a guess that the session is valid)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import redis
import redis.asyncio

from shop_common.errors import ServiceUnavailable

log = logging.getLogger("shop.revocation")

# Longer than the longest access token (users caps ACCESS_TOKEN_TTL_SECONDS at one day) plus leeway.
STAMP_TTL_SECONDS = 86_400 + 3_600
# Published for a deleted account: every token of that user is older than this.
DELETED_VERSION = 2**53
_MAX_CACHE_ENTRIES = 100_000
_DOWN_BACKOFF_SECONDS = 0.5

# KEYS[1]: the stamp. ARGV: version, ttl seconds. Versions only grow, so a late publish of an older
# version (two requests racing) never lowers the stamp.
_PUBLISH_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local version = tonumber(ARGV[1])
if version > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
else
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
"""


def stamp_key(prefix: str, user_id: int) -> str:
    return f"{prefix}tokens:version:{user_id}"


class RevocationUnavailable(ServiceUnavailable):
    title = "Session check unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class RevocationStamps(Protocol):
    async def min_version(self, user_id: int) -> int:
        """The lowest token version still valid for the user; RevocationUnavailable if unknown."""
        ...


class RedisStamps:
    """Reads stamps from Redis with a short per-process cache (the hot path is a dict lookup)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[int, tuple[int, float]] = {}
        self._down_until = float("-inf")

    async def min_version(self, user_id: int) -> int:
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and now - cached[1] < self._cache_seconds:
            return cached[0]
        if now < self._down_until:
            raise RevocationUnavailable("the session store is unreachable; retry shortly")
        try:
            raw: Any = await self._client.get(stamp_key(self._prefix, user_id))
        except (redis.RedisError, OSError) as exc:
            self._down_until = self._clock() + _DOWN_BACKOFF_SECONDS
            log.warning("revocation stamps unavailable (%s); refusing tokens until it is back", exc)
            raise RevocationUnavailable("the session store is unreachable; retry shortly") from None
        try:
            version = int(raw) if raw is not None else 0
        except ValueError:
            log.error("malformed revocation stamp for user %d: %r", user_id, raw)
            raise RevocationUnavailable("the session store holds a malformed stamp") from None
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            self._cache.clear()
        # Stamped with the time the read started: the value is at least that fresh, never more.
        self._cache[user_id] = (version, now)
        return version


def async_redis(url: str) -> redis.asyncio.Redis:
    """A bounded pool with short deadlines: a slow Redis costs a request 0.5 s at most."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=16, timeout=0.5, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    return redis.asyncio.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


class StampPublisher:
    """Writes stamps (users service). Synchronous: users' handlers run in the threadpool."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._prefix = prefix
        self._script: Any = client.register_script(_PUBLISH_LUA)

    def publish(self, versions: dict[int, int]) -> None:
        """Raises redis.RedisError when Redis cannot be written; the caller retries later."""
        for user_id, version in versions.items():
            self._script(keys=[stamp_key(self._prefix, user_id)], args=[version, STAMP_TTL_SECONDS])
