"""Fixed-window login rate limit per client IP, in memory or shared through Redis."""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("gateway.ratelimit")


class RateLimiter(Protocol):
    async def hit(self, key: str) -> int | None:
        """Count one attempt; None when allowed, else the seconds until the window resets."""

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Per process. Windows are pruned lazily, so memory stays bounded by active clients."""

    def __init__(self, limit: int, window_seconds: int) -> None:
        self.limit = limit
        self.window = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str) -> int | None:
        now = time.monotonic()
        if len(self._windows) > 10_000:
            self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window}
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        count += 1
        self._windows[key] = (started, count)
        if count <= self.limit:
            return None
        return max(1, math.ceil(self.window - (now - started)))

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    """Shared by every gateway replica. Falls back to the in-process limiter while Redis is down,
    so an outage neither opens the door wide nor locks everybody out."""

    def __init__(self, url: str, limit: int, window_seconds: int, prefix: str) -> None:
        self.redis: Redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.limit = limit
        self.window = window_seconds
        self.prefix = prefix
        self.fallback = MemoryRateLimiter(limit, window_seconds)

    async def hit(self, key: str) -> int | None:
        name = f"{self.prefix}login:{key}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, self.window, nx=True)
                pipe.ttl(name)
                count, _, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("redis unavailable for the login rate limit: %s", type(exc).__name__)
            return await self.fallback.hit(key)
        if int(count) <= self.limit:
            return None
        return max(1, int(ttl))

    async def close(self) -> None:
        await self.redis.aclose()


def make_rate_limiter(
    redis_url: str | None, limit: int, window_seconds: int, prefix: str
) -> RateLimiter:
    if redis_url:
        return RedisRateLimiter(redis_url, limit, window_seconds, prefix)
    return MemoryRateLimiter(limit, window_seconds)
