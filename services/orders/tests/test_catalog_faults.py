"""Catalog slow, failing or gone: bounded 503s, retries only where safe, nothing stranded.

A fake catalog is used here ONLY for fault injection (slow answers, 5xx, a lost connection): it is
a real HTTP server on a free port, so the real client, timeouts and retries are exercised. The
behaviour of the real catalog is covered by the other test files and the stack tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from orders.catalog_client import (
    MAX_ANSWER_BYTES,
    AsyncCatalogReserver,
    CatalogCalls,
    HttpCatalogClient,
    RefusedAfterDelivery,
    Reservation,
    ReservationCursor,
    ReservationLine,
    ReservationPage,
)
from orders.exceptions import CatalogUnavailable, InsufficientStock, UnknownProducts
from orders.main import create_app
from shop_dev.stack import free_port
from shop_dev.testing import RunningStack, ShopDatabase, TestKeys

if TYPE_CHECKING:
    from conftest import ProductFactory, SettingsFactory, Stock


@dataclass
class Seen:
    method: str
    path: str  # without the query string
    headers: dict[str, str]
    body: Any
    query: str = ""
    client_port: int = 0


Behaviour = Callable[[Seen, int], tuple[int, Any, float]]  # → status, json body, delay


@dataclass
class FakeCatalog:
    url: str
    seen: list[Seen] = field(default_factory=list)
    behaviour: Behaviour = lambda seen, n: (500, {"title": "boom"}, 0.0)

    def calls(self, path_suffix: str = "") -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(path_suffix)]


@pytest.fixture
def fake_catalog() -> Iterator[FakeCatalog]:
    port = free_port()
    fake = FakeCatalog(url=f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves catalog

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            seen = Seen(
                self.command,
                path,
                dict(self.headers),
                json.loads(raw) if raw else None,
                query,
                self.client_address[1],
            )
            with lock:
                fake.seen.append(seen)
                n = len(fake.seen)
            status, body, delay = fake.behaviour(seen, n)
            time.sleep(delay)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (read timeout): expected

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def _calls(fake: FakeCatalog, *, retries: int = 2, read: float = 0.5) -> CatalogCalls:
    return CatalogCalls(
        base_url=fake.url,
        connect_timeout_seconds=0.5,
        read_timeout_seconds=read,
        service_token="t" * 20,
        retries=retries,
        backoff_seconds=0.01,
    )


def _client(fake: FakeCatalog, *, retries: int = 2, read: float = 0.5) -> HttpCatalogClient:
    return HttpCatalogClient(**_calls(fake, retries=retries, read=read))


def _held(seen: Seen, status: str = "held") -> dict[str, Any]:
    return {
        "reservation_id": seen.body["reservation_id"],
        "status": status,
        "expires_at": "2030-01-01T00:00:00Z",
        "items": [
            {
                "product_id": i["product_id"],
                "name": "Fake",
                "sku": "FAKE-1",
                "quantity": i["quantity"],
                "unit_price": "2.50",
            }
            for i in seen.body["items"]
        ],
    }


class _Blocking:
    """An AsyncCatalogReserver called from the test's thread: one event loop for all its calls
    (the connections its pool keeps belong to that loop)."""

    def __init__(self, reserver: AsyncCatalogReserver) -> None:
        self._reserver = reserver
        self._runner = asyncio.Runner()

    def reserve(self, *args: Any, **kwargs: Any) -> Reservation:
        return self._runner.run(self._reserver.reserve(*args, **kwargs))

    def close(self) -> None:
        self._reserver.close()
        self._runner.close()


ClientMaker = Callable[..., "HttpCatalogClient | _Blocking"]


@pytest.fixture(params=["threaded", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[ClientMaker]:
    made: list[HttpCatalogClient | _Blocking] = []

    def make(
        fake: FakeCatalog, *, retries: int = 2, read: float = 0.5
    ) -> HttpCatalogClient | _Blocking:
        client: HttpCatalogClient | _Blocking
        if request.param == "threaded":
            client = _client(fake, retries=retries, read=read)
        else:
            client = _Blocking(AsyncCatalogReserver(**_calls(fake, retries=retries, read=read)))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


class TestClientRetries:
    """Both clients of catalog: the threaded one (urllib3; everything but placement) and the one
    placement awaits on the event loop (AsyncCatalogReserver), to the same contract."""

    def test_5xx_is_retried_with_the_same_reservation_id_then_unavailable(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        rid = uuid.uuid4()

        with pytest.raises(CatalogUnavailable):
            make_client(fake_catalog, retries=2).reserve(rid, [ReservationLine(5, 1)])

        posts = fake_catalog.calls("/internal/reservations")
        assert len(posts) == 3
        assert {p.body["reservation_id"] for p in posts} == {str(rid)}
        assert all(p.headers["X-Service-Token"] == "t" * 20 for p in posts)

    def test_a_transient_5xx_is_absorbed_by_a_retry(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (
            (503, {}, 0.0) if n == 1 else (201, _held(seen), 0.0)
        )

        reservation = make_client(fake_catalog).reserve(uuid.uuid4(), [ReservationLine(5, 2)])

        assert isinstance(reservation, Reservation)
        assert reservation.status == "held"
        assert len(fake_catalog.seen) == 2

    def test_4xx_is_never_retried(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        short = [{"product_id": 5, "requested": 2, "available": 1}]
        fake_catalog.behaviour = lambda seen, n: (409, {"short": short}, 0.0)

        with pytest.raises(InsufficientStock) as caught:
            make_client(fake_catalog).reserve(uuid.uuid4(), [ReservationLine(5, 2)])

        assert caught.value.extensions == {"short": short}
        assert len(fake_catalog.seen) == 1

    @pytest.mark.parametrize(
        ("status", "body", "refused"),
        [
            (
                409,
                {"short": [{"product_id": 5, "requested": 1, "available": 0}]},
                InsufficientStock,
            ),
            (422, {"detail": "gone", "unknown": [5]}, UnknownProducts),
        ],
    )
    def test_a_refusal_that_answers_a_retry_says_an_earlier_attempt_may_still_land(
        self,
        fake_catalog: FakeCatalog,
        make_client: ClientMaker,
        status: int,
        body: dict[str, Any],
        refused: type[Exception],
    ) -> None:
        """The first attempt timed out after it was sent: catalog may still be running it (behind
        a row lock) when the retry is refused, so the refusal does not settle the reservation."""
        fake_catalog.behaviour = lambda seen, n: (201, {}, 1.0) if n == 1 else (status, body, 0.0)

        with pytest.raises(RefusedAfterDelivery) as caught:
            make_client(fake_catalog, retries=1, read=0.3).reserve(
                uuid.uuid4(), [ReservationLine(5, 1)]
            )

        assert isinstance(caught.value.refusal, refused)
        assert len(fake_catalog.calls("/internal/reservations")) == 2

    def test_an_unexpected_answer_to_a_retry_leaves_the_outcome_unknown(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (201, {}, 1.0) if n == 1 else (400, {}, 0.0)

        with pytest.raises(CatalogUnavailable) as caught:
            make_client(fake_catalog, retries=1, read=0.3).reserve(
                uuid.uuid4(), [ReservationLine(5, 1)]
            )

        assert caught.value.outcome_unknown

    def test_an_unexpected_first_answer_is_known_to_have_done_nothing(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (400, {}, 0.0)

        with pytest.raises(CatalogUnavailable) as caught:
            make_client(fake_catalog).reserve(uuid.uuid4(), [ReservationLine(5, 1)])

        assert not caught.value.outcome_unknown

    def test_a_read_timeout_is_retried_and_bounded(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (201, {}, 2.0)
        started = time.monotonic()

        with pytest.raises(CatalogUnavailable):
            make_client(fake_catalog, retries=1, read=0.3).reserve(
                uuid.uuid4(), [ReservationLine(5, 1)]
            )

        elapsed = time.monotonic() - started
        assert len(fake_catalog.seen) == 2
        assert 0.6 <= elapsed < 1.5

    def test_an_unreadable_answer_is_unavailable_not_a_crash(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (201, {"unexpected": True}, 0.0)

        with pytest.raises(CatalogUnavailable):
            make_client(fake_catalog).reserve(uuid.uuid4(), [ReservationLine(5, 1)])

    def test_an_oversized_answer_is_not_read_whole(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        huge = "x" * (MAX_ANSWER_BYTES + 1)
        fake_catalog.behaviour = lambda seen, n: (201, {"padding": huge}, 0.0)

        with pytest.raises(CatalogUnavailable) as caught:
            make_client(fake_catalog, retries=0).reserve(uuid.uuid4(), [ReservationLine(5, 1)])

        assert caught.value.outcome_unknown  # catalog answered: it may have reserved

    def test_a_refused_connection_is_known_never_sent(self, make_client: ClientMaker) -> None:
        client = make_client(FakeCatalog(url=f"http://127.0.0.1:{free_port()}"), retries=1)

        with pytest.raises(CatalogUnavailable) as caught:
            client.reserve(uuid.uuid4(), [ReservationLine(5, 1)])

        assert not caught.value.outcome_unknown

    def test_a_read_timeout_may_have_been_delivered(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (201, {}, 1.0)

        with pytest.raises(CatalogUnavailable) as caught:
            make_client(fake_catalog, retries=0, read=0.2).reserve(
                uuid.uuid4(), [ReservationLine(5, 1)]
            )

        assert caught.value.outcome_unknown

    def test_a_call_keeps_its_connection_for_the_next(
        self, fake_catalog: FakeCatalog, make_client: ClientMaker
    ) -> None:
        fake_catalog.behaviour = lambda seen, n: (201, _held(seen), 0.0)
        client = make_client(fake_catalog)

        for _ in range(3):
            client.reserve(uuid.uuid4(), [ReservationLine(5, 1)])

        assert len({seen.client_port for seen in fake_catalog.seen}) == 1
        client.close()


@pytest.fixture
def faulty_orders(
    make_settings: SettingsFactory, fake_catalog: FakeCatalog, jwt_keys: TestKeys
) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    settings = make_settings(
        catalog_url=fake_catalog.url,
        catalog_connect_timeout_seconds=0.3,
        catalog_read_timeout_seconds=0.4,
        catalog_retries=2,
        catalog_backoff_seconds=0.05,
    )
    user_id = int(uuid.uuid4().int % 1_000_000_000) + 1_000_000
    headers = {"Authorization": f"Bearer {jwt_keys.token(user_id)}"}
    with TestClient(create_app(settings)) as client:
        yield client, headers, user_id


def _statuses(engine: Engine, user_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text("SELECT status FROM orders.orders WHERE user_id = :u ORDER BY id"),
                {"u": user_id},
            )
        )


class TestOrdersWhenCatalogFails:
    def test_slow_catalog_is_503_within_the_bound_and_the_reservation_is_released(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        client, headers, user_id = faulty_orders
        fake_catalog.behaviour = lambda seen, n: (
            (200, {"status": "released"}, 0.0) if seen.path.endswith("/release") else (201, {}, 3.0)
        )
        started = time.monotonic()

        response = client.post(
            "/orders/",
            json={"items": [{"product_id": 5, "quantity": 1}]},
            headers=headers | {"X-Request-ID": "slow-catalog-1"},
        )

        elapsed = time.monotonic() - started
        # bound: 3 attempts x (0.3 connect + 0.4 read) + 0.05 + 0.1 backoff + one release attempt
        assert elapsed < 3 * 0.7 + 0.15 + 0.7 + 1.0
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/catalog-unavailable"
        reserves = fake_catalog.calls("/internal/reservations")
        releases = fake_catalog.calls("/release")
        assert len(reserves) == 3
        assert len(releases) == 1
        assert (
            releases[0].path
            == f"/internal/reservations/{reserves[0].body['reservation_id']}/release"
        )
        assert {s.headers["X-Request-ID"] for s in fake_catalog.seen} == {"slow-catalog-1"}
        assert _statuses(admin_engine, user_id) == ["failed"]
        assert client.get("/orders/", headers=headers).json()["total"] == 0

    def test_catalog_refusing_connections_is_a_fast_503(
        self,
        make_settings: SettingsFactory,
        jwt_keys: TestKeys,
        admin_engine: Engine,
    ) -> None:
        settings = make_settings(
            catalog_url=f"http://127.0.0.1:{free_port()}",
            catalog_backoff_seconds=0.05,
        )
        user_id = int(uuid.uuid4().int % 1_000_000_000) + 1_000_000
        with TestClient(create_app(settings)) as client:
            started = time.monotonic()
            response = client.post(
                "/orders/",
                json={"items": [{"product_id": 5, "quantity": 1}]},
                headers={"Authorization": f"Bearer {jwt_keys.token(user_id)}"},
            )
            elapsed = time.monotonic() - started

        assert response.status_code == 503
        assert elapsed < 2
        assert _statuses(admin_engine, user_id) == ["failed"]

    def test_one_call_reserves_and_commits(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        client, headers, user_id = faulty_orders
        fake_catalog.behaviour = lambda seen, n: (201, _held(seen, "committed"), 0.0)

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 2}]}, headers=headers
        )

        assert response.status_code == 201, response.text
        assert (response.json()["status"], response.json()["total_amount"]) == ("pending", "5.00")
        assert [(s.method, s.path, s.query) for s in fake_catalog.seen] == [
            ("POST", "/internal/reservations", "commit=true")
        ]
        assert _statuses(admin_engine, user_id) == ["pending"]

    def test_a_catalog_answering_held_is_sent_the_commit(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        """A catalog that predates `?commit=true` ignores it and holds: orders commits after."""
        client, headers, user_id = faulty_orders

        def behaviour(seen: Seen, n: int) -> tuple[int, Any, float]:
            if seen.path == "/internal/reservations":
                return 201, _held(seen), 0.0
            return 200, {"status": "committed"}, 0.0

        fake_catalog.behaviour = behaviour

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 2}]}, headers=headers
        )

        assert response.status_code == 201, response.text
        assert len(fake_catalog.calls("/commit")) == 1
        assert _statuses(admin_engine, user_id) == ["pending"]

    def test_a_failed_commit_releases_and_marks_the_order_failed(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        client, headers, user_id = faulty_orders

        def behaviour(seen: Seen, n: int) -> tuple[int, Any, float]:
            if seen.path == "/internal/reservations":
                return 201, _held(seen), 0.0
            if seen.path.endswith("/commit"):
                return 500, {}, 0.0
            return 200, {"status": "released"}, 0.0

        fake_catalog.behaviour = behaviour

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 2}]}, headers=headers
        )

        assert response.status_code == 503
        assert len(fake_catalog.calls("/commit")) == 3
        assert len(fake_catalog.calls("/release")) == 1
        assert _statuses(admin_engine, user_id) == ["failed"]

    def test_a_reservation_that_does_not_match_the_order_is_refused(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        client, headers, user_id = faulty_orders

        def behaviour(seen: Seen, n: int) -> tuple[int, Any, float]:
            if seen.path == "/internal/reservations":
                answer = _held(seen)
                answer["items"][0]["quantity"] = 1  # catalog held less than asked
                return 201, answer, 0.0
            return 200, {"status": "released"}, 0.0

        fake_catalog.behaviour = behaviour

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 2}]}, headers=headers
        )

        assert response.status_code == 503
        assert len(fake_catalog.calls("/release")) == 1
        assert _statuses(admin_engine, user_id) == ["failed"]

    @pytest.mark.parametrize(
        ("status", "body", "answered"),
        [
            (409, {"short": [{"product_id": 5, "requested": 1, "available": 0}]}, 409),
            (422, {"detail": "gone", "unknown": [5]}, 422),
        ],
    )
    def test_a_refusal_of_a_retry_is_answered_once_a_release_settles_the_first_attempt(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
        status: int,
        body: dict[str, Any],
        answered: int,
    ) -> None:
        """The fault campaign's false 409: the first reserve timed out after it was sent and
        might still take the stock; the retry was refused. Only a confirmed release makes the
        refusal the outcome."""
        client, headers, user_id = faulty_orders

        def behaviour(seen: Seen, n: int) -> tuple[int, Any, float]:
            if seen.path.endswith("/release"):
                return 200, {"status": "released"}, 0.0
            return (201, {}, 1.0) if n == 1 else (status, body, 0.0)

        fake_catalog.behaviour = behaviour

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 1}]}, headers=headers
        )

        assert response.status_code == answered, response.text
        reserves = fake_catalog.calls("/internal/reservations")
        releases = fake_catalog.calls("/release")
        assert len(reserves) == 2
        assert [r.path for r in releases] == [
            f"/internal/reservations/{reserves[0].body['reservation_id']}/release"
        ]
        assert _statuses(admin_engine, user_id) == ["rejected"]

    def test_a_refusal_of_a_retry_without_a_confirmed_release_is_202_for_recovery(
        self,
        faulty_orders: tuple[TestClient, dict[str, str], int],
        fake_catalog: FakeCatalog,
        admin_engine: Engine,
    ) -> None:
        client, headers, user_id = faulty_orders
        short = {"short": [{"product_id": 5, "requested": 1, "available": 0}]}

        def behaviour(seen: Seen, n: int) -> tuple[int, Any, float]:
            if seen.path.endswith("/release"):
                return 503, {}, 0.0
            return (201, {}, 1.0) if n == 1 else (409, short, 0.0)

        fake_catalog.behaviour = behaviour

        response = client.post(
            "/orders/", json={"items": [{"product_id": 5, "quantity": 1}]}, headers=headers
        )

        assert response.status_code == 202, response.text
        assert response.json()["status"] == "placing"
        assert _statuses(admin_engine, user_id) == ["placing"]


class FlakyRelease:
    """The real catalog client, except that release fails while `broken` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = True

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.reserve(*args, **kwargs)

    def commit(self, reservation_id: uuid.UUID) -> None:
        self.inner.commit(reservation_id)

    def release(self, reservation_id: uuid.UUID, *, retry: bool = True) -> None:
        if self.broken:
            raise CatalogUnavailable("release is broken in this test")
        self.inner.release(reservation_id, retry=retry)

    def get_reservation(self, reservation_id: uuid.UUID) -> Reservation | None:
        result: Reservation | None = self.inner.get_reservation(reservation_id)
        return result

    def list_reservations(self, after: ReservationCursor | None, limit: int) -> ReservationPage:
        page: ReservationPage = self.inner.list_reservations(after, limit)
        return page


def test_a_cancel_interrupted_by_catalog_is_finished_by_a_retry(
    make_settings: SettingsFactory,
    shop_db: ShopDatabase,
    stack: RunningStack,
    jwt_keys: TestKeys,
    make_product: ProductFactory,
    stock: Stock,
) -> None:
    product = make_product(stock=10)
    user_id = int(uuid.uuid4().int % 1_000_000_000) + 1_000_000
    headers = {"Authorization": f"Bearer {jwt_keys.token(user_id)}"}
    inner = HttpCatalogClient(
        base_url=stack.url("catalog"),
        connect_timeout_seconds=5,
        read_timeout_seconds=5,
        service_token=shop_db.internal_api_token,
        retries=0,
        backoff_seconds=0,
    )
    flaky = FlakyRelease(inner)
    with TestClient(create_app(make_settings(), catalog=flaky)) as client:
        order = client.post(
            "/orders/",
            json={"items": [{"product_id": product["id"], "quantity": 3}]},
            headers=headers,
        ).json()
        url = f"/orders/{order['id']}/status"

        interrupted = client.patch(url, params={"new_status": "cancelled"}, headers=headers)
        confirm = client.patch(url, params={"new_status": "confirmed"}, headers=headers)
        flaky.broken = False
        retried = client.patch(url, params={"new_status": "cancelled"}, headers=headers)
    inner.close()

    assert interrupted.status_code == 503
    assert confirm.status_code == 409
    assert retried.status_code == 200
    assert retried.json()["status"] == "cancelled"
    view = stock.assert_consistent({product["id"]: 10}, [user_id])
    assert view[product["id"]]["available"] == 10
