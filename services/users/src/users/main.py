"""Application factory: `python -m shop_common.server users.main:create_app` (uvicorn with
`WEB_CONCURRENCY` workers, as the launcher and the image run it; `uvicorn --factory
users.main:create_app` runs one process). Nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from redis.backoff import NoBackoff
from redis.retry import Retry

from shop_common.app import ServiceSpec, build_service_app
from shop_common.auth import KeySource, StaticKeys
from shop_common.revocation import StampPublisher
from users.accounts.router import internal_router
from users.accounts.router import router as accounts_router
from users.auth.passwords import HashGate, Passwords
from users.auth.policy import PasswordPolicy
from users.auth.ratelimit import RegistrationLimiter, make_buckets, make_login_limiter
from users.auth.router import router as auth_router
from users.auth.service import AuthContext
from users.auth.sessions import RevocationPublisher
from users.auth.tokens import TokenIssuer, load_signing_key
from users.config import UsersSettings
from users.db import SCHEMA
from users.superuser import create_first_superuser

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()  # read from the environment
    passwords = Passwords(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        gate=HashGate(
            concurrency=settings.password_hash_concurrency,
            queue_size=settings.password_hash_queue_size,
            wait_seconds=settings.password_hash_wait_seconds,
        ),
    )
    tokens = TokenIssuer(
        load_signing_key(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
    )

    def key_source(_app: FastAPI) -> KeySource:
        return StaticKeys(tokens.jwks)  # users verifies its own tokens without HTTP to itself

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis_client = (
            redis.Redis.from_url(
                settings.redis_url,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                retry=Retry(NoBackoff(), 1),  # fail fast: the limiter falls back to memory
            )
            if settings.redis_url
            else None
        )
        prefix = settings.redis_key_prefix
        app.state.auth = AuthContext(
            passwords=passwords,
            tokens=tokens,
            limiter=make_login_limiter(
                per_minute=settings.login_rate_limit_per_minute,
                burst=settings.login_rate_limit_burst,
                redis_client=redis_client,
                prefix=prefix,
            ),
            registrations=RegistrationLimiter(
                make_buckets(
                    per_minute=settings.registration_rate_limit_per_minute,
                    burst=settings.registration_rate_limit_burst,
                    redis_client=redis_client,
                ),
                make_buckets(
                    per_minute=settings.registration_global_rate_limit_per_minute,
                    burst=settings.registration_global_rate_limit_burst,
                    redis_client=redis_client,
                ),
                prefix,
            ),
            policy=PasswordPolicy(min_length=settings.password_min_length),
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        )
        revocations = RevocationPublisher(
            None if redis_client is None else StampPublisher(redis_client, prefix=prefix),
            app.state.sessionmaker,
        )
        app.state.revocations = revocations
        revocations.install()
        if settings.first_superuser_username and settings.first_superuser_email:
            assert settings.first_superuser_password is not None  # noqa: S101 - settings validator
            await run_in_threadpool(
                create_first_superuser,
                app.state.sessionmaker,
                passwords,
                username=settings.first_superuser_username,
                email=settings.first_superuser_email,
                password=settings.first_superuser_password.get_secret_value(),
            )
        try:
            yield
        finally:
            revocations.close()
            if redis_client is not None:
                redis_client.close()

    spec = ServiceSpec(
        name="users",
        schema=SCHEMA,
        alembic_ini=ALEMBIC_INI,
        routers=[accounts_router, auth_router, internal_router],  # GET /users/me first
        description="Accounts and authentication; issues the access tokens every service verifies.",
        extra_lifespan=lifespan,
        key_source=key_source,
        check_revocation=False,  # users reads the token version from its own rows (deps.py)
    )
    return build_service_app(spec, settings)
