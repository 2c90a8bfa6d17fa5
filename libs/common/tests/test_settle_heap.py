"""shop_common.server.settle_heap: a serving process freezes what its startup left alive, once.
The first tests run in their own interpreter (freezing is per process, and pytest's own is
shared); the last shows a service's lifespan calls it before the first request."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

import shop_common.app

ClientFactory = Callable[..., TestClient]


def _run(code: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()


def test_the_first_call_freezes_what_is_alive_and_later_calls_nothing() -> None:
    before, first, again, collected = _run(
        """
        import gc
        from shop_common.server import settle_heap

        class Node:
            pass

        before = gc.get_freeze_count()
        settle_heap()
        first = gc.get_freeze_count()
        settle_heap()  # a second app in the same process: nothing more is frozen
        again = gc.get_freeze_count()
        node = Node()
        node.itself = node  # a cycle made after startup is still the collector's
        del node
        print(before, first, again, gc.collect())
        """
    )
    assert int(before) == 0
    assert int(first) > 10_000  # the modules imported, their classes and functions
    assert again == first
    assert int(collected) >= 1  # the Node


def test_startup_garbage_is_collected_not_frozen() -> None:
    (survivors,) = _run(
        """
        import gc, weakref
        from shop_common.server import settle_heap

        class Node:
            pass

        node = Node()
        node.itself = node
        watch = weakref.ref(node)
        del node  # garbage, in a cycle: only the collector can free it
        settle_heap()
        gc.collect()
        print(int(watch() is not None))
        """
    )
    assert survivors == "0"


def test_a_service_settles_its_heap_once_started_before_its_first_request(
    client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    monkeypatch.setattr(shop_common.app, "settle_heap", lambda: events.append("settled"))
    router = APIRouter()

    @router.get("/probe")
    def probe() -> dict[str, bool]:
        events.append("request")
        return {"ok": True}

    client = client_for(router)
    assert events == ["settled"]
    assert client.get("/probe").status_code == 200
    assert events == ["settled", "request"]
