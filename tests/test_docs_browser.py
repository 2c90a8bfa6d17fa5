"""The gateway's /docs in a real browser (Debian's headless Chromium, driven by Playwright) that may
reach nothing but loopback: Swagger UI renders every operation of users, catalog and orders from
the merged spec, and one operation expands. /redoc renders too.

Needs `apt-get install chromium` (never `playwright install`: no browser download). Without it the
test skips, except in CI (CI=true), where it fails."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright

from shop_dev.testing import RunningStack

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Name resolution fails for every host but loopback, so nothing can leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test (.ci/run installs chromium)")
    pytest.skip(f"{reason} (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        _unavailable("Debian's chromium is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def offline_page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page whose requests beyond loopback are refused and recorded."""
    context = browser.new_context()
    outside: list[str] = []

    def only_loopback(route: Route, request: Request) -> None:
        if request.url.startswith(("data:", "blob:")) or urlsplit(request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    try:
        yield page, outside
    finally:
        context.close()


def complete_spec(gateway: str) -> dict[str, Any]:
    """The merged spec once every upstream answered: on a loaded machine one may miss the
    gateway's deadline, and the gateway then keeps a partial spec for a few seconds only."""
    deadline = time.monotonic() + 90
    while True:
        spec: dict[str, Any] = httpx.get(f"{gateway}/openapi.json", timeout=30).json()
        missing = spec["info"].get("x-missing-upstreams")
        if not missing:
            return spec
        assert time.monotonic() < deadline, f"upstreams missing from the spec: {missing}"
        time.sleep(1)


def test_docs_render_every_operation_of_the_three_services_offline(
    stack: RunningStack, offline_page: tuple[Page, list[str]]
) -> None:
    gateway = stack.url("gateway")
    spec = complete_spec(gateway)
    operations = {
        (method.upper(), path, op["operationId"].split("-", 1)[0])
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {service for *_, service in operations} == {"users", "catalog", "orders"}
    page, outside = offline_page

    page.goto(f"{gateway}/docs", wait_until="load", timeout=60_000)
    page.wait_for_selector(".opblock", timeout=60_000)

    rendered = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(b => [
                b.querySelector('.opblock-summary-method').textContent.trim(),
                b.querySelector('.opblock-summary-path').getAttribute('data-path')])""",
    )
    assert {(method, path) for method, path, _ in operations} == {(m, p) for m, p in rendered}
    first = page.locator(".opblock").first
    assert first.locator(".opblock-body").count() == 0  # collapsed until clicked
    first.locator(".opblock-summary").click()
    first.locator(".opblock-body").wait_for(state="visible", timeout=30_000)
    assert first.locator(".responses-wrapper").count() == 1  # the expanded operation's answers
    assert outside == []


def test_redoc_renders_offline(stack: RunningStack, offline_page: tuple[Page, list[str]]) -> None:
    page, outside = offline_page

    page.goto(f"{stack.url('gateway')}/redoc", wait_until="load", timeout=60_000)

    page.wait_for_selector("[data-section-id^='operation/']", timeout=60_000)
    assert page.locator("[data-section-id^='operation/']").count() > 10
    assert outside == []
