"""Micro-benchmark: CPU per token verification with and without the revocation check, side by
side in one run (interleaved rounds, median per variant, process CPU from time.process_time()).

- `no_check`: shop_common's TokenVerifier without stamps (EdDSA signature + strict claims);
- `check_cached`: with Redis stamps, the local copy fresh (the steady state);
- `check_redis_read`: with Redis stamps and a copy that is always stale, so every verification
  also fetches the changes from Redis (what one request per process per second pays; the Redis
  server's own CPU is not counted).

The verifier runs exactly this code on catalog and orders for every authenticated request (for
`POST /orders/` too). users does not use it: GET /users/me compares the token's `ver` with the row
it loads anyway, an integer comparison."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import jwt
import redis

from shop_common.auth import ALGORITHM, StaticKeys, TokenVerifier
from shop_common.keys import generate_private_key_pem, load_private_key, public_jwk
from shop_common.revocation import RedisStamps, StampPublisher, async_redis

ISSUER, AUDIENCE = "shop-users", "shop"
TARGET_MS = 0.1


def _token(pem: bytes, kid: str, user_id: int) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "username": "bench",
        "is_superuser": False,
        "ver": 1,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, load_private_key(pem), algorithm=ALGORITHM, headers={"kid": kid})


async def _cpu_per_call_ms(verifier: TokenVerifier, token: str, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        await verifier.verify(token)
    return (time.process_time() - start) * 1000 / calls


async def _measure(redis_url: str, calls: int, rounds: int) -> dict[str, Any]:
    pem = generate_private_key_pem()
    jwk = public_jwk(load_private_key(pem))
    keys = StaticKeys(json.loads(json.dumps({"keys": [jwk]})))
    token = _token(pem, str(jwk["kid"]), 4242)
    prefix = f"bench:{uuid.uuid4().hex[:12]}:"
    sync_client = redis.Redis.from_url(redis_url)
    StampPublisher(sync_client, prefix=prefix).publish({4242: 1})
    client = async_redis(redis_url)
    try:
        plain = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
        cached = TokenVerifier(
            keys, issuer=ISSUER, audience=AUDIENCE, stamps=RedisStamps(client, prefix=prefix)
        )
        uncached = TokenVerifier(
            keys,
            issuer=ISSUER,
            audience=AUDIENCE,
            stamps=RedisStamps(client, prefix=prefix, cache_seconds=1e-12),
        )
        variants = {"no_check": plain, "check_cached": cached, "check_redis_read": uncached}
        for verifier in variants.values():  # warm up (key parsing, connections, caches)
            for _ in range(50):
                await verifier.verify(token)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        order = list(variants)
        for _ in range(rounds):
            for name in order:
                samples[name].append(await _cpu_per_call_ms(variants[name], token, calls))
            order.reverse()  # ABC then CBA: a drift of the machine's speed cancels out
    finally:
        await client.aclose()
        for key in sync_client.scan_iter(f"{prefix}*"):
            sync_client.delete(key)
        sync_client.close()
    median = {name: statistics.median(values) for name, values in samples.items()}

    def paired(name: str) -> float:
        """Median over rounds of (variant - no_check) measured side by side in that round."""
        return statistics.median(
            v - base for v, base in zip(samples[name], samples["no_check"], strict=True)
        )

    cached_cost = paired("check_cached")
    read_cost = paired("check_redis_read")
    return {
        "calls_per_round": calls,
        "rounds": rounds,
        "cpu_ms_per_verify": {name: round(value, 4) for name, value in median.items()},
        "check_cost_ms": {"cached": round(cached_cost, 4), "redis_read": round(read_cost, 4)},
        "target_ms": TARGET_MS,
        "passed": cached_cost <= TARGET_MS,
    }


def measure(
    redis_url: str = "redis://127.0.0.1:6379/0", calls: int = 500, rounds: int = 21
) -> dict[str, Any]:
    return asyncio.run(_measure(redis_url, calls, rounds))


def markdown(result: dict[str, Any]) -> list[str]:
    cpu, cost = result["cpu_ms_per_verify"], result["check_cost_ms"]
    return [
        "",
        "## Revocation check (catalog and orders; micro-benchmark, same run)",
        "",
        f"CPU per token verification in one process, median of {result['rounds']} interleaved "
        f"rounds of {result['calls_per_round']} (bench/shopbench/revocation.py); the check's cost "
        "is the median of the per-round differences. On GET /users/me the check is an integer "
        "comparison on the row users loads anyway.",
        "",
        "| variant | ms CPU per verification | check's own cost |",
        "|---|---:|---:|",
        f"| no revocation check | {cpu['no_check']:.4f} | |",
        f"| check, local copy fresh (steady state) | {cpu['check_cached']:.4f} | "
        f"{cost['cached']:+.4f} ms |",
        f"| check, copy refreshed from Redis (once per process per second) | "
        f"{cpu['check_redis_read']:.4f} | {cost['redis_read']:+.4f} ms |",
        "",
        f"Target ≤ {result['target_ms']} ms CPU per request for the check: "
        + ("✔ met" if result["passed"] else "✘ missed")
        + ".",
    ]
