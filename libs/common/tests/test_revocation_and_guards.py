"""Revocation stamps (Redis, cached <= 1 s, fail closed while Redis is down), strict claim types,
and the request guards every service gets (JSON depth, NUL/undecodable query strings)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
import redis
from fastapi import APIRouter, Body
from fastapi.testclient import TestClient

from shop_common.auth import CurrentUser, Principal, StaticKeys, TokenVerifier
from shop_common.errors import Unauthorized
from shop_common.guards import json_depth_exceeds, query_problem
from shop_common.revocation import (
    DELETED_VERSION,
    RedisStamps,
    RevocationUnavailable,
    StampPublisher,
    async_redis,
)
from shop_common.schemas import Input
from shop_dev.testing import TestKeys

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
ClientFactory = Callable[..., TestClient]


class Payload(Input):
    data: Any


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def publisher(prefix: str) -> Iterator[StampPublisher]:
    client = redis.Redis.from_url(REDIS_URL)
    yield StampPublisher(client, prefix=prefix)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def run_stamps(url: str, prefix: str, calls: Callable[[RedisStamps, FakeClock], Any]) -> Any:
    async def scenario() -> Any:
        client = async_redis(url)
        clock = FakeClock()
        try:
            return await calls(RedisStamps(client, prefix=prefix, clock=clock), clock)
        finally:
            await client.aclose()

    return asyncio.run(scenario())


class TestStamps:
    def test_a_published_version_is_read_and_cached_for_at_most_a_second(
        self, publisher: StampPublisher, prefix: str
    ) -> None:
        async def calls(stamps: RedisStamps, clock: FakeClock) -> list[int]:
            seen = [await stamps.min_version(7)]
            publisher.publish({7: 3})
            seen.append(await stamps.min_version(7))  # cached: still the old value
            clock.now += 1.0
            seen.append(await stamps.min_version(7))  # the cache has expired
            return seen

        assert run_stamps(REDIS_URL, prefix, calls) == [0, 0, 3]

    def test_versions_only_grow(self, publisher: StampPublisher, prefix: str) -> None:
        publisher.publish({8: 5})
        publisher.publish({8: 2})  # a late, older publish

        async def calls(stamps: RedisStamps, _clock: FakeClock) -> int:
            return await stamps.min_version(8)

        assert run_stamps(REDIS_URL, prefix, calls) == 5

    def test_redis_down_fails_closed_with_503(self, prefix: str) -> None:
        async def calls(stamps: RedisStamps, _clock: FakeClock) -> None:
            await stamps.min_version(9)

        with pytest.raises(RevocationUnavailable) as raised:
            run_stamps(DOWN_URL, prefix, calls)
        assert raised.value.headers["Retry-After"] == "1"

    def test_a_fresh_copy_is_still_used_when_redis_goes_down_then_refused(
        self, publisher: StampPublisher, prefix: str
    ) -> None:
        publisher.publish({10: 1})

        async def scenario() -> tuple[int, int, str]:
            proxy = await RedisProxy.start()
            client = async_redis(f"redis://127.0.0.1:{proxy.port}/0")
            clock = FakeClock()
            stamps = RedisStamps(client, prefix=prefix, clock=clock)
            try:
                first = await stamps.min_version(10)
                await proxy.stop()  # Redis "goes away"
                clock.now += 0.5
                cached = await stamps.min_version(10)
                clock.now += 0.6
                try:
                    await stamps.min_version(10)
                except RevocationUnavailable:
                    return first, cached, "refused"
                return first, cached, "accepted"
            finally:
                await client.aclose()

        assert asyncio.run(scenario()) == (1, 1, "refused")

    def test_only_changes_are_read_after_the_first_sync(
        self, publisher: StampPublisher, prefix: str
    ) -> None:
        publisher.publish({13: 1, 14: 1})

        async def calls(stamps: RedisStamps, clock: FakeClock) -> list[int]:
            seen = [await stamps.min_version(13), await stamps.min_version(14)]
            publisher.publish({14: 2, 13: 1})  # 13 rewritten unchanged, 14 revoked again
            clock.now += 1.0
            seen += [await stamps.min_version(13), await stamps.min_version(14)]
            return seen

        assert run_stamps(REDIS_URL, prefix, calls) == [1, 1, 1, 2]


class RedisProxy:
    """A TCP forwarder to the local Redis that can be cut, to stand for Redis going away."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @classmethod
    async def start(cls) -> RedisProxy:
        proxy = cls()
        proxy._server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


def _verifier(keys: TestKeys, stamps: Any = None) -> TokenVerifier:
    return TokenVerifier(
        StaticKeys(json.loads(keys.jwks_json)),
        issuer="shop-users",
        audience="shop",
        stamps=stamps,
    )


class TestVerifierWithStamps:
    def test_token_older_than_the_published_version_is_refused(
        self, jwt_keys: TestKeys, publisher: StampPublisher, prefix: str
    ) -> None:
        publisher.publish({11: 2})
        old, current = jwt_keys.token(11, ver=1), jwt_keys.token(11, ver=2)

        async def calls(stamps: RedisStamps, _clock: FakeClock) -> tuple[str, int]:
            verifier = _verifier(jwt_keys, stamps)
            principal = await verifier.verify(current)
            try:
                await verifier.verify(old)
            except Unauthorized:
                return "refused", principal.token_version
            return "accepted", principal.token_version

        assert run_stamps(REDIS_URL, prefix, calls) == ("refused", 2)

    def test_a_token_verified_before_is_refused_once_revoked(
        self, jwt_keys: TestKeys, publisher: StampPublisher, prefix: str
    ) -> None:
        """The verifier remembers a verified token; the revocation check still runs every time."""
        token = jwt_keys.token(13, ver=1)

        async def calls(stamps: RedisStamps, clock: FakeClock) -> list[str]:
            verifier = _verifier(jwt_keys, stamps)
            outcomes = [f"ok {(await verifier.verify(token)).id}"]
            publisher.publish({13: 2})
            clock.now += 1.0  # the stamps' local copy is at most a second old
            try:
                await verifier.verify(token)
                outcomes.append("accepted")
            except Unauthorized:
                outcomes.append("refused")
            return outcomes

        assert run_stamps(REDIS_URL, prefix, calls) == ["ok 13", "refused"]

    def test_deleted_users_tokens_are_refused(
        self, jwt_keys: TestKeys, publisher: StampPublisher, prefix: str
    ) -> None:
        publisher.publish({12: DELETED_VERSION})

        async def calls(stamps: RedisStamps, _clock: FakeClock) -> Principal:
            return await _verifier(jwt_keys, stamps).verify(jwt_keys.token(12, ver=3))

        with pytest.raises(Unauthorized):
            run_stamps(REDIS_URL, prefix, calls)

    def test_service_answers_503_for_tokens_while_redis_is_down(
        self, client_for: ClientFactory, jwt_keys: TestKeys
    ) -> None:
        router = APIRouter()

        @router.get("/who")
        async def who(user: CurrentUser) -> dict[str, int]:
            return {"id": user.id}

        client = client_for(router, redis_url=DOWN_URL)

        response = client.get("/who", headers={"Authorization": f"Bearer {jwt_keys.token(5)}"})

        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "claims",
    [
        {"is_superuser": "false"},
        {"is_superuser": 0},
        {"sub": "0"},
        {"sub": "-1"},
        {"sub": "+3"},
        {"sub": "1e3"},
        {"sub": "٣"},  # an Arabic-Indic digit: str.isdigit() says yes, an id it is not
        {"sub": "2147483648"},
        {"ver": 1.5},
        {"ver": False},
        {"iat": True},
        {"jti": 5},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_are_refused(jwt_keys: TestKeys, claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthorized):
        asyncio.run(_verifier(jwt_keys).verify(jwt_keys.token(1, **claims)))


def test_largest_user_id_is_accepted(jwt_keys: TestKeys) -> None:
    principal = asyncio.run(_verifier(jwt_keys).verify(jwt_keys.token(2**31 - 1)))

    assert principal.id == 2**31 - 1


class TestGuards:
    @pytest.mark.parametrize(
        ("body", "deep"),
        [
            (b'{"a": [1, 2, {"b": []}]}', False),
            (b"[" * 32 + b"]" * 32, False),
            (b"[" * 33 + b"]" * 33, True),
            (b'{"s": "' + b"[" * 500 + b'"}', False),  # brackets inside a string do not count
            (b'["\\"' + b"[" * 40 + b'"]', False),  # nor after an escaped quote
            (b"[]" * 10_000, False),
            (b"[" * 100_000, True),
        ],
    )
    def test_json_depth(self, body: bytes, deep: bool) -> None:
        assert json_depth_exceeds(body, 32) is deep

    @pytest.mark.parametrize(
        ("query", "refused"),
        [
            (b"", False),
            (b"q=caf%C3%A9&page=2", False),
            (b"q=%00", True),
            (b"q%00=1", True),
            (b"q=%ff", True),
            (b"q=\xff", True),
            (b"q=%zz", False),  # not an escape: kept as text, like Starlette does
        ],
    )
    def test_query_strings(self, query: bytes, refused: bool) -> None:
        assert (query_problem(query) is not None) is refused

    def test_deeply_nested_input_is_422_not_500(self, client_for: ClientFactory) -> None:
        router = APIRouter()

        @router.post("/echo")
        def echo(payload: Payload) -> dict[str, str]:
            return {"ok": "yes"}

        client = client_for(router)
        deep = b'{"data": ' + b"[" * 400 + b"]" * 400 + b"}"

        response = client.post("/echo", content=deep, headers={"Content-Type": "application/json"})
        shallow = client.post("/echo", json={"data": [[["x"]]]})

        assert response.status_code == 422
        assert response.json()["errors"][0]["type"] == "json_too_deep"
        assert shallow.status_code == 200

    def test_nul_query_parameter_is_422(self, client_for: ClientFactory) -> None:
        router = APIRouter()

        @router.get("/search")
        def search(q: str = "") -> dict[str, str]:
            return {"q": q}

        client = client_for(router)

        assert client.get("/search?q=%00").status_code == 422
        assert client.get("/search?q=%E9").status_code == 422
        assert client.get("/search?q=caf%C3%A9").json() == {"q": "café"}

    def test_nul_check_walks_deep_values_without_recursion(self) -> None:
        value: Any = "x\x00"
        for _ in range(5_000):
            value = [value]

        with pytest.raises(ValueError, match="NUL"):
            Payload(data=value)

    def test_body_of_an_unbound_parameter_still_reaches_the_handler(
        self, client_for: ClientFactory
    ) -> None:
        router = APIRouter()

        @router.post("/sum")
        def add(numbers: Annotated[list[int], Body()]) -> int:
            return sum(numbers)

        client = client_for(router)

        assert client.post("/sum", json=[1, 2, 3]).json() == 6
