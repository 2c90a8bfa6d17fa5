"""Hostile and malformed input: always a 4xx problem+json, never a 500, nothing stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.models import Category, Product, Reservation

from .conftest import ProductFactory, new_sku, product_body

BAD_PRODUCT_FIELDS: list[tuple[str, Any]] = [
    ("price", "0"),
    ("price", "0.00"),
    ("price", "-1"),
    ("price", -0.01),
    ("price", "100000000.00"),
    ("price", "99999999.999"),
    ("price", "1.999"),
    ("price", "NaN"),
    ("price", "Infinity"),
    ("price", "-Infinity"),
    ("price", "1e400"),
    ("price", "abc"),
    ("price", None),
    ("price", [1]),
    ("stock_quantity", -1),
    ("stock_quantity", 1_000_001),
    ("stock_quantity", 2**63),
    ("stock_quantity", 1.5),
    ("stock_quantity", "10"),
    ("stock_quantity", True),
    ("name", ""),
    ("name", "   "),
    ("name", "a\x00b"),
    ("name", "x" * 201),
    ("description", "nul\x00inside"),
    ("sku", "abc-1"),
    ("sku", "AB C"),
    ("sku", "-AB"),
    ("sku", ""),
    ("sku", "A" * 65),
    ("sku", "AB\x00"),
    ("sku", "ÄBC"),
    ("sku", "ABC\n"),
    ("slug", "Not A Slug"),
    ("slug", "a--b"),
    ("category_id", 0),
    ("category_id", 2**31),
    ("category_id", "1"),
    ("tags", ["x" * 51]),
    ("tags", ["   "]),
    ("tags", [f"t{i}" for i in range(21)]),
    ("tags", "not-a-list"),
    ("is_active", "maybe"),
    ("id", 12345),
    ("created_at", "2020-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(("field", "value"), BAD_PRODUCT_FIELDS)
def test_bad_product_fields_are_422_and_nothing_is_stored(
    admin: TestClient, db: Session, field: str, value: Any
) -> None:
    body = product_body(**{field: value})
    marker = body["name"] if field != "name" else None

    response = admin.post("/products/", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]
    if marker is not None:
        assert db.scalar(select(func.count()).where(Product.name == marker)) == 0


def test_json_nan_literal_as_price_is_422(admin: TestClient, db: Session) -> None:
    sku = new_sku()
    raw = json.dumps(product_body(sku=sku)).replace('"19.99"', "NaN")

    response = admin.post("/products/", content=raw, headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert db.scalar(select(Product.id).where(Product.sku == sku)) is None


@pytest.mark.parametrize(
    "raw", ["", "{", "[]", "null", '"text"', '{"name": "x"', "\x00", '{"a": 1}']
)
def test_malformed_bodies_are_422(admin: TestClient, raw: str) -> None:
    response = admin.post("/products/", content=raw, headers={"Content-Type": "application/json"})

    assert response.status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"min_price": "NaN"},
        {"max_price": "Infinity"},
        {"min_price": "-1"},
        {"min_price": "abc"},
        {"max_price": "1e400"},
        {"page": 0},
        {"page": "x"},
        {"page_size": 101},
        {"page_size": 0},
        {"sort": "price; DROP TABLE catalog.products"},
        {"sort": "hashed_password"},
        {"category_id": 2**31},
        {"category_id": -1},
        {"q": ""},
        {"q": "x" * 201},
        {"q": "bad\x00byte"},
        {"tag": "bad\x00byte"},
        {"tag": "   "},
        {"is_active": "maybe"},
        {"in_stock": "2"},
    ],
)
def test_bad_list_parameters_are_422(anon: TestClient, params: dict[str, Any]) -> None:
    response = anon.get("/products/", params=params)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/products/0",
        "/products/-1",
        "/products/2147483648",
        "/products/abc",
        "/products/low-stock?threshold=-1",
        "/products/low-stock?threshold=1000001",
        "/categories/99999999999999999999",
        "/categories/?parent_id=0",
        "/tags/?q=%00",
    ],
)
def test_bad_ids_and_query_values_are_422(anon: TestClient, path: str) -> None:
    assert anon.get(path).status_code == 422


@pytest.mark.parametrize(
    "path", ["/products/by-sku/AB%00C", "/products/by-slug/a%00b", "/products/by-sku/'%20OR%201=1"]
)
def test_lookups_with_impossible_keys_are_404(anon: TestClient, path: str) -> None:
    assert anon.get(path).status_code == 404


def test_bad_category_input_is_422_and_nothing_is_stored(admin: TestClient, db: Session) -> None:
    bodies: list[dict[str, Any]] = [
        {"name": "bad\x00name"},
        {"name": ""},
        {"name": "ok", "parent_id": 0},
        {"name": "ok", "parent_id": "1"},
        {"name": "ok", "slug": "UPPER"},
        {"name": "ok", "unknown": 1},
        {"name": "x" * 201},
    ]
    before = db.scalar(select(func.count()).select_from(Category))

    codes = [admin.post("/categories/", json=b).status_code for b in bodies]

    assert codes == [422] * len(bodies)
    assert db.scalar(select(func.count()).select_from(Category)) == before


@pytest.mark.parametrize(
    "patch",
    [
        {"price": "NaN"},
        {"stock_quantity": -5},
        {"sku": "lower"},
        {"name": None},
        {"tags": None},
        {"is_active": None},
        {"description": "x\x00"},
        {"id": 1},
    ],
)
def test_bad_patches_are_422_and_change_nothing(
    admin: TestClient, make_product: ProductFactory, patch: dict[str, Any]
) -> None:
    product = make_product()

    response = admin.patch(f"/products/{product['id']}", json=patch)

    assert response.status_code == 422
    assert admin.get(f"/products/{product['id']}").json() == product


def test_bulk_over_100_items_is_422(admin: TestClient) -> None:
    response = admin.post("/products/bulk", json={"items": [product_body()] * 101})

    assert response.status_code == 422


def line(product_id: Any = 1, quantity: Any = 1) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


@pytest.mark.parametrize(
    "body",
    [
        {"reservation_id": "not-a-uuid", "items": [line()]},
        {"reservation_id": str(uuid.uuid4()), "items": []},
        {"reservation_id": str(uuid.uuid4())},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity=0)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity=-1)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity=1_000_001)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity=2**63)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity=1.5)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(quantity="1")]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(product_id=0)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line(product_id=2**31)]},
        {"reservation_id": str(uuid.uuid4()), "items": [line()] * 101},
        {"reservation_id": str(uuid.uuid4()), "items": [line()], "ttl_seconds": 0},
        {"reservation_id": str(uuid.uuid4()), "items": [line()], "ttl_seconds": 3601},
        {"reservation_id": str(uuid.uuid4()), "items": [line()], "unit_price": "0.01"},
        {"reservation_id": str(uuid.uuid4()), "items": [line() | {"unit_price": "0.01"}]},
    ],
)
def test_bad_reservations_are_422_and_hold_nothing(
    internal: TestClient, db: Session, body: dict[str, Any]
) -> None:
    response = internal.post("/internal/reservations", json=body)

    assert response.status_code == 422
    rid = body.get("reservation_id", "")
    if len(rid) == 36:
        assert db.get(Reservation, uuid.UUID(rid)) is None


def test_bad_reservation_ids_in_paths_are_422(internal: TestClient) -> None:
    assert internal.get("/internal/reservations/xyz").status_code == 422
    assert internal.post("/internal/reservations/1/commit").status_code == 422
    assert internal.post("/internal/reservations/'%20OR%201=1/release").status_code == 422
