"""Rate limits on what costs an Argon2 hash: logins per client IP and per account, registrations
per client IP and overall. GCRA buckets in Redis (shared by replicas), or in memory.

GCRA ("generic cell rate algorithm") keeps one timestamp per key, the theoretical arrival time
(TAT). With an emission interval T = 60 / rate and a burst B, an attempt is allowed while
TAT - now <= (B - 1) * T; each allowed attempt moves TAT forward by T. All keys of one attempt
are checked first and consumed only if every one of them allows it."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis

from users.auth.exceptions import LoginRateLimited, RegistrationRateLimited

log = logging.getLogger("users.ratelimit")

_MAX_MEMORY_KEYS = 100_000

# KEYS: bucket keys. ARGV: interval seconds, tolerance seconds. Returns the wait in seconds
# (as a string, Lua numbers lose their fraction on the way back) or "0" when allowed.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tats = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  if tat - now > tolerance and tat - now - tolerance > wait then
    wait = tat - now - tolerance
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local tat = tats[i] + interval
  redis.call('SET', key, tostring(tat), 'PX', math.ceil((tat - now) * 1000))
end
return '0'
"""


class Buckets(Protocol):
    def hit(self, keys: Sequence[str]) -> float:
        """Consume one attempt from every key and return 0, or return the seconds to wait."""
        ...


class MemoryBuckets:
    """One process's buckets (the fallback when no Redis is configured or it is unreachable)."""

    def __init__(
        self,
        interval: float,
        tolerance: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._tolerance = tolerance
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, keys: Sequence[str]) -> float:
        with self._lock:
            now = self._clock()
            if len(self._tats) > _MAX_MEMORY_KEYS:
                self._tats = {k: v for k, v in self._tats.items() if v > now}
            tats = [max(self._tats.get(key, now), now) for key in keys]
            wait = max((tat - now - self._tolerance for tat in tats), default=0.0)
            if wait > 0:
                return wait
            for key, tat in zip(keys, tats, strict=True):
                self._tats[key] = tat + self._interval
            return 0.0


class RedisBuckets:
    """Buckets shared by every replica. If Redis fails, this process's buckets take over and
    Redis is left alone for `retry_after_seconds`, so an outage does not slow every login."""

    def __init__(
        self,
        client: redis.Redis,
        interval: float,
        tolerance: float,
        fallback: MemoryBuckets,
        retry_after_seconds: float = 5.0,
    ) -> None:
        self._script: Any = client.register_script(_GCRA_LUA)
        self._interval = interval
        self._tolerance = tolerance
        self._fallback = fallback
        self._retry_after = retry_after_seconds
        self._down_until = float("-inf")

    def hit(self, keys: Sequence[str]) -> float:
        if time.monotonic() < self._down_until:
            return self._fallback.hit(keys)
        try:
            wait = self._script(keys=list(keys), args=[self._interval, self._tolerance])
        except redis.RedisError as exc:
            self._down_until = time.monotonic() + self._retry_after
            log.warning("rate-limit store unavailable (%s); limiting in this process", exc)
            return self._fallback.hit(keys)
        return float(wait)


def _retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))


class LoginLimiter:
    def __init__(self, buckets: Buckets | None, prefix: str = "shop:") -> None:
        self._buckets = buckets  # None: limits disabled (rate 0)
        self._prefix = f"{prefix}users:login:"

    def check(self, *, client_ip: str, account: str) -> None:
        """Count one attempt for the IP and for the account; LoginRateLimited when over. `account`
        is the resolved account (its id), or the normalised login when it names nobody, so the
        username and the email of one account share one budget."""
        if self._buckets is None:
            return
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        wait = self._buckets.hit(
            [f"{self._prefix}ip:{client_ip}", f"{self._prefix}account:{digest}"]
        )
        if wait > 0:
            retry_after = _retry_after(wait)
            raise LoginRateLimited(
                f"too many login attempts; retry in {retry_after} s", retry_after=retry_after
            )


class RegistrationLimiter:
    def __init__(
        self, per_ip: Buckets | None, overall: Buckets | None, prefix: str = "shop:"
    ) -> None:
        self._per_ip = per_ip
        self._overall = overall
        self._prefix = f"{prefix}users:register:"

    def check(self, *, client_ip: str) -> None:
        """Per IP first (one client cannot spend the shared budget once it is over its own)."""
        for buckets, key, who in (
            (self._per_ip, f"ip:{client_ip}", "from this address"),
            (self._overall, "all", "right now"),
        ):
            if buckets is None:
                continue
            wait = buckets.hit([f"{self._prefix}{key}"])
            if wait > 0:
                retry_after = _retry_after(wait)
                raise RegistrationRateLimited(
                    f"too many registrations {who}; retry in {retry_after} s",
                    retry_after=retry_after,
                )


def make_buckets(
    *, per_minute: int, burst: int, redis_client: redis.Redis | None
) -> Buckets | None:
    if per_minute == 0:
        return None
    interval = 60.0 / per_minute
    tolerance = interval * (burst - 1)
    memory = MemoryBuckets(interval, tolerance)
    if redis_client is None:
        return memory
    return RedisBuckets(redis_client, interval, tolerance, memory)


def make_login_limiter(
    *, per_minute: int, burst: int, redis_client: redis.Redis | None, prefix: str = "shop:"
) -> LoginLimiter:
    return LoginLimiter(
        make_buckets(per_minute=per_minute, burst=burst, redis_client=redis_client), prefix
    )
