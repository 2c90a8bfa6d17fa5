"""Session revocation stamps: a per-user token version that users publishes in Redis and every
service checks when it verifies an access token.

Each access token carries `ver`, the user's token version when it was issued. Revoking a user's
sessions (deactivation, deletion, role change, password change, an admin's revoke) increments the
version in users' database and publishes it: `<prefix>tokens:versions` (hash user id -> version)
and `<prefix>tokens:changed` (sorted set user id -> Redis time of the change, in ms). Entries are
dropped STAMP_TTL_SECONDS after their change, longer than any access token lives, so a dropped
stamp only concerned tokens that have expired too. A token whose `ver` is lower is refused.

Readers do not ask Redis per user: each process keeps every stamp in memory and, at most once per
`cache_seconds` (<= 1 s), fetches the changes since its last read in one round trip. A revocation
therefore reaches every service within that time, and the per-request cost is a dict lookup
whatever the number of users. While Redis cannot be read they fail closed: once the local copy is
older than `cache_seconds`, requests answer 503 with Retry-After (never a guess that a session is
still valid)."""

from __future__ import annotations

import asyncio
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
_DOWN_BACKOFF_SECONDS = 0.5
_OVERLAP_MS = 2_000  # re-read a little of the past: tolerates small steps of Redis's clock
_PUBLISH_CHUNK = 500

# KEYS: versions hash, changed zset. ARGV: ttl ms, then user id, version pairs. Versions only grow
# (a late publish of an older version never lowers a stamp), and only a real change moves the
# user's change time, so rewriting the same stamps (users' periodic resync) costs readers nothing.
_PUBLISH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV, 2 do
  local user, version = ARGV[i], tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', KEYS[1], user) or '-1')
  if version > current then
    redis.call('HSET', KEYS[1], user, ARGV[i + 1])
    redis.call('ZADD', KEYS[2], now, user)
  elseif not redis.call('ZSCORE', KEYS[2], user) then
    redis.call('ZADD', KEYS[2], now, user)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]))
for _, user in ipairs(expired) do
  redis.call('HDEL', KEYS[1], user)
  redis.call('ZREM', KEYS[2], user)
end
return now
"""

# KEYS: versions hash, changed zset. ARGV: since (ms, inclusive).
# Returns {now, user, version, changed at, user, version, changed at, ...}.
_CHANGES_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {tostring(now)}
local changed = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #changed, 2 do
  out[#out + 1] = changed[i]
  out[#out + 1] = redis.call('HGET', KEYS[1], changed[i]) or '0'
  out[#out + 1] = changed[i + 1]
end
return out
"""


def stamp_keys(prefix: str) -> list[str]:
    return [f"{prefix}tokens:versions", f"{prefix}tokens:changed"]


class RevocationUnavailable(ServiceUnavailable):
    title = "Session check unavailable"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


class RevocationStamps(Protocol):
    async def min_version(self, user_id: int) -> int:
        """The lowest token version still valid for the user; RevocationUnavailable if unknown."""
        ...


class RedisStamps:
    """Every stamp in memory, brought up to date from Redis at most once per `cache_seconds`."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keys = stamp_keys(prefix)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._versions: dict[int, int] = {}
        self._changed_ms: dict[int, int] = {}  # when each stamp changed (Redis time): for pruning
        self._cursor_ms: int | None = None  # Redis time of the last read
        self._synced_at = float("-inf")  # local time when the last successful read started
        self._down_until = float("-inf")
        self._lock = asyncio.Lock()
        self._script: Any = client.register_script(_CHANGES_LUA)

    async def min_version(self, user_id: int) -> int:
        if self._clock() - self._synced_at >= self._cache_seconds:
            await self._sync()
        return self._versions.get(user_id, 0)

    async def _sync(self) -> None:
        async with self._lock:
            started = self._clock()
            if started - self._synced_at < self._cache_seconds:
                return  # another request brought it up to date while this one waited
            if started < self._down_until:
                raise RevocationUnavailable("the session store is unreachable; retry shortly")
            since = 0 if self._cursor_ms is None else self._cursor_ms - _OVERLAP_MS
            try:
                reply: list[Any] = await self._script(keys=self._keys, args=[since])
                now_ms = int(reply[0])
                changes = [
                    (int(reply[i]), int(reply[i + 1]), int(float(reply[i + 2])))
                    for i in range(1, len(reply), 3)
                ]
            except (redis.RedisError, OSError, ValueError, IndexError) as exc:
                self._down_until = self._clock() + _DOWN_BACKOFF_SECONDS
                log.warning("revocation stamps unavailable (%s); refusing tokens until back", exc)
                raise RevocationUnavailable(
                    "the session store is unreachable; retry shortly"
                ) from None
            for user_id, version, changed_ms in changes:
                if version > self._versions.get(user_id, -1):
                    self._versions[user_id] = version
                self._changed_ms[user_id] = changed_ms
            if self._cursor_ms is not None and now_ms // 3_600_000 != self._cursor_ms // 3_600_000:
                self._prune(now_ms)  # hourly: stamps older than any token are forgotten
            self._cursor_ms = now_ms
            self._synced_at = started

    def _prune(self, now_ms: int) -> None:
        horizon = now_ms - STAMP_TTL_SECONDS * 1000
        for user_id in [u for u, at in self._changed_ms.items() if at < horizon]:
            del self._changed_ms[user_id]
            self._versions.pop(user_id, None)


def async_redis(url: str) -> redis.asyncio.Redis:
    """A bounded pool with short deadlines: a slow Redis costs a request 0.5 s at most."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=16, timeout=0.5, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    return redis.asyncio.Redis.from_pool(pool)  # owns the pool: aclose() disconnects it


class StampPublisher:
    """Writes stamps (users service). Synchronous: users' handlers run in the threadpool."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._keys = stamp_keys(prefix)
        self._script: Any = client.register_script(_PUBLISH_LUA)

    def publish(self, versions: dict[int, int]) -> None:
        """Raises redis.RedisError when Redis cannot be written; the caller retries later."""
        items = sorted(versions.items())
        for start in range(0, len(items), _PUBLISH_CHUNK):
            args: list[int] = [STAMP_TTL_SECONDS * 1000]
            for user_id, version in items[start : start + _PUBLISH_CHUNK]:
                args += [user_id, version]
            self._script(keys=self._keys, args=args)
