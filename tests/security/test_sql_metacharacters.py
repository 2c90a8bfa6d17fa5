"""SQL and LIKE metacharacters in every string the API accepts (query filters, path values,
bodies, headers): the answer is the correct result or a 4xx, never a 5xx, and nothing matches
more than it literally should."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from shop_dev.testing import RunningStack

if TYPE_CHECKING:
    from security.conftest import Account, AccountFactory, ProductFactory

pytestmark = pytest.mark.stack

NASTY = [
    "' OR 1=1 --",
    "' OR '1'='1",
    "'; DROP TABLE catalog.products; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "%_%",
    "a%",
    "\\%",
    "'",
    "--",
    "/*",
    "1) OR (1=1",
]


def _marker() -> str:
    """Letters only, starting with x: no word of NASTY can be a prefix of it (the letters k-t
    alone could start with "or", and a search for `" OR ""="` then found it, 1 run in 100)."""
    return "x" + "".join(chr(ord("k") + int(c, 16) % 10) for c in uuid.uuid4().hex[:12])


@pytest.fixture(scope="module")
def tagged(stack: RunningStack, admin: Account) -> dict[str, Any]:
    """Two products sharing a unique tag: one whose name holds every metacharacter, one plain."""
    tag = f"tag{_marker()}"
    made: dict[str, Any] = {"tag": tag}
    for role, name in (
        ("meta", f"Meta {_marker()} 100% off_sale a\\b 'x' --"),
        ("plain", f"Plain {_marker()}"),
    ):
        sku = f"SQL-{uuid.uuid4().hex[:12].upper()}"
        response = httpx.post(
            f"{stack.url('gateway')}/products/",
            json={"name": name, "sku": sku, "price": "1.00", "stock_quantity": 1, "tags": [tag]},
            headers=admin.headers,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        made[role] = response.json()
    return made


def _ok_or_4xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("value", NASTY)
def test_product_search_matches_only_literal_words(
    stack: RunningStack, tagged: dict[str, Any], value: str
) -> None:
    response = httpx.get(
        f"{stack.url('gateway')}/products/", params={"q": value, "tag": tagged["tag"]}, timeout=30
    )

    _ok_or_4xx(response)
    if response.status_code == 200:
        ids = {p["id"] for p in response.json()["items"]}
        assert tagged["plain"]["id"] not in ids
        assert response.json()["total"] == len(ids)


@pytest.mark.parametrize("value", NASTY)
def test_tag_filter_matches_only_that_exact_tag(stack: RunningStack, value: str) -> None:
    response = httpx.get(
        f"{stack.url('gateway')}/products/", params={"tag": value, "page_size": 100}, timeout=30
    )

    _ok_or_4xx(response)
    if response.status_code == 200:
        wanted = " ".join(value.split()).casefold()
        for product in response.json()["items"]:
            assert wanted in {t.casefold() for t in _tag_names(product)}, product


def _tag_names(product: dict[str, Any]) -> list[str]:
    return [t["name"] if isinstance(t, dict) else str(t) for t in product.get("tags", [])]


@pytest.mark.parametrize("value", NASTY)
def test_sort_and_lookup_paths_refuse_or_miss(stack: RunningStack, value: str) -> None:
    base = stack.url("gateway")
    encoded = quote(value, safe="")
    answers = [
        httpx.get(f"{base}/products/", params={"sort": value}, timeout=30),
        httpx.get(f"{base}/products/by-sku/{encoded}", timeout=30),
        httpx.get(f"{base}/products/by-slug/{encoded}", timeout=30),
        httpx.get(f"{base}/categories/", params={"q": value}, timeout=30),
    ]

    assert answers[0].status_code == 422
    assert answers[1].status_code in (404, 422)
    assert answers[2].status_code in (404, 422)
    _ok_or_4xx(answers[3])


def test_product_and_category_names_round_trip_exactly(
    stack: RunningStack, admin: Account, new_product: ProductFactory
) -> None:
    name = "Robert'); DROP TABLE catalog.products; -- 100% _x_ \\"
    product = new_product(name=name, description="' OR 1=1 -- % _ \\", tags=["' or 1=1 --"])
    category = httpx.post(
        f"{stack.url('gateway')}/categories/",
        json={"name": f"{name} {_marker()}", "description": "%_\\'"},
        headers=admin.headers,
        timeout=30,
    )
    found = httpx.get(f"{stack.url('gateway')}/products/{product['id']}", timeout=30)
    by_tag = httpx.get(
        f"{stack.url('gateway')}/products/", params={"tag": "' OR 1=1 --"}, timeout=30
    )

    assert found.json()["name"] == name
    assert found.json()["description"] == "' OR 1=1 -- % _ \\"
    assert category.status_code == 201, category.text
    assert category.json()["description"] == "%_\\'"
    assert product["id"] in {p["id"] for p in by_tag.json()["items"]}


@pytest.mark.parametrize("sku", ["' OR 1=1 --", "%", "_", "A\\B", "A'B"])
def test_sku_with_metacharacters_is_refused(stack: RunningStack, admin: Account, sku: str) -> None:
    response = httpx.post(
        f"{stack.url('gateway')}/products/",
        json={"name": "x", "sku": sku, "price": "1.00", "stock_quantity": 1},
        headers=admin.headers,
        timeout=30,
    )

    assert response.status_code == 422


@pytest.fixture(scope="module")
def meta_user(stack: RunningStack) -> dict[str, Any]:
    full_name = f"Meta {_marker()} ' OR 1=1 -- % _ \\ \" /* a%"
    username = f"meta_{uuid.uuid4().hex[:10]}"
    response = httpx.post(
        f"{stack.url('gateway')}/users/",
        json={
            "username": username,
            "email": f"{username}@example.com",
            "password": "long-enough-password",
            "full_name": full_name,
            "bio": "'; DROP TABLE users.users; --",
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    assert (user["full_name"], user["bio"]) == (full_name, "'; DROP TABLE users.users; --")
    return user


@pytest.mark.parametrize("value", NASTY)
def test_user_search_matches_only_literal_substrings(
    stack: RunningStack, admin: Account, meta_user: dict[str, Any], value: str
) -> None:
    response = httpx.get(
        f"{stack.url('gateway')}/users/",
        params={"q": value, "page_size": 100},
        headers=admin.headers,
        timeout=30,
    )

    _ok_or_4xx(response)
    if response.status_code == 200:
        needle = value.casefold()
        for user in response.json()["items"]:
            haystacks = (user["username"], user["email"], user.get("full_name") or "")
            assert any(needle in h.casefold() for h in haystacks), user
        if value in meta_user["full_name"]:
            assert response.json()["total"] >= 1


@pytest.mark.parametrize("value", NASTY)
def test_usernames_and_emails_with_metacharacters_are_refused_or_missed(
    stack: RunningStack,
    admin: Account,
    make_account: AccountFactory,
    client_ip: Callable[[], str],
    value: str,
) -> None:
    base = stack.url("gateway")
    register = httpx.post(
        f"{base}/users/",
        json={"username": value, "email": f"{value}@example.com", "password": "long-enough-pw"},
        timeout=30,
    )
    by_email = httpx.get(
        f"{base}/users/by-email/{quote(value + '@example.com', safe='@')}",
        headers=admin.headers,
        timeout=30,
    )
    login = httpx.post(
        f"{stack.url('users')}/auth/token",
        data={"username": value, "password": value},
        headers={"X-Forwarded-For": client_ip()},
        timeout=30,
    )

    assert register.status_code == 422
    assert by_email.status_code in (404, 422)
    assert login.status_code in (401, 422, 429)


@pytest.mark.parametrize("value", ["' OR 1=1 --", "%", "_", "\\"])
def test_order_filters_and_keys_with_metacharacters(
    stack: RunningStack, alice: Account, new_product: ProductFactory, value: str
) -> None:
    product = new_product()
    with httpx.Client(base_url=stack.url("gateway"), headers=alice.headers, timeout=30) as c:
        status_filter = c.get("/orders/", params={"status": value})
        key = f"k{value}{uuid.uuid4().hex}".replace(" ", "")
        body = {"items": [{"product_id": product["id"], "quantity": 1}]}
        first = c.post("/orders/", json=body, headers={"Idempotency-Key": key})
        again = c.post("/orders/", json=body, headers={"Idempotency-Key": key})
        spaced = c.post("/orders/", json=body, headers={"Idempotency-Key": "a b"})

    assert status_filter.status_code == 422
    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()["id"]) == (201, first.json()["id"])
    assert spaced.status_code == 422
