"""/products: CRUD, listing, search, statistics; reads public, writes admin."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg2.extensions
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from catalog.config import CatalogSettings
from catalog.models import Product
from catalog.products.lookup import read_product
from catalog.products.service import search_condition
from shop_common.db import count_queries, make_engine, make_reader

from .conftest import CategoryFactory, ProductFactory, new_sku, product_body, unique


@contextmanager
def driver_statements(engine: Engine) -> Iterator[list[tuple[str, bool]]]:
    """Every statement psycopg2 sends on the connections `engine` opens in the block, with the
    connection's autocommit flag (False: psycopg2 wraps it in BEGIN ... COMMIT). Seen at the
    driver, so it also counts what runs on a raw pooled connection, past SQLAlchemy's events."""
    seen: list[tuple[str, bool]] = []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> None:
            seen.append((str(query), bool(self.connection.autocommit)))
            super().execute(query, vars)

    def on_connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.cursor_factory = Recording

    event.listen(engine, "connect", on_connect)
    try:
        yield seen
    finally:
        event.remove(engine, "connect", on_connect)


def ids(page: dict[str, Any]) -> list[int]:
    return [p["id"] for p in page["items"]]


class TestCreateProduct:
    def test_created_product_is_returned_and_stored(
        self, admin: TestClient, db: Session, make_category: CategoryFactory
    ) -> None:
        category = make_category()
        sku = new_sku()
        name = unique("Blue Mug ")

        response = admin.post(
            "/products/",
            json={
                "name": f"  {name} ",
                "sku": sku,
                "price": "12.50",
                "stock_quantity": 7,
                "description": "Stoneware",
                "category_id": category["id"],
                "tags": ["Kitchen", " kitchen ", "GIFT  Ideas"],
            },
        )

        assert response.status_code == 201
        body = response.json()
        assert body["name"] == name
        assert body["slug"] == name.lower().replace(" ", "-")
        assert (body["sku"], body["price"], body["stock_quantity"]) == (sku, "12.50", 7)
        assert body["is_active"] is True
        assert body["category"] == {
            "id": category["id"],
            "name": category["name"],
            "slug": category["slug"],
        }
        assert [t["name"] for t in body["tags"]] == ["gift ideas", "kitchen"]
        stored = db.scalars(select(Product).where(Product.sku == sku)).one()
        assert (stored.price, stored.stock_quantity) == (Decimal("12.50"), 7)

    def test_duplicate_sku_is_409_and_keeps_the_first_product(
        self, admin: TestClient, db: Session
    ) -> None:
        sku = new_sku()
        first = admin.post("/products/", json=product_body(sku=sku, name=unique("Mug ")))
        assert first.status_code == 201

        again = admin.post("/products/", json=product_body(sku=sku, name=unique("Other ")))

        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["type"] == "/problems/sku-taken"
        assert db.scalars(select(Product.name).where(Product.sku == sku)).all() == [
            first.json()["name"]
        ]

    def test_duplicate_slug_is_409(self, admin: TestClient, make_product: ProductFactory) -> None:
        existing = make_product()

        response = admin.post("/products/", json=product_body(name=existing["name"]))

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/slug-taken"

    def test_a_name_without_letters_gets_its_slug_from_the_sku(self, admin: TestClient) -> None:
        sku = new_sku()

        response = admin.post("/products/", json=product_body(name="***", sku=sku))

        assert response.json()["slug"] == sku.lower()

    def test_unknown_category_is_422(self, admin: TestClient, db: Session) -> None:
        sku = new_sku()

        response = admin.post("/products/", json=product_body(sku=sku, category_id=2_000_000_000))

        assert response.status_code == 422
        assert response.json()["type"] == "/problems/unknown-category"
        assert db.scalar(select(Product.id).where(Product.sku == sku)) is None

    def test_unicode_names_round_trip(self, admin: TestClient, anon: TestClient) -> None:
        name = f"Ĉapelo 帽子 🎩 قبعة {unique()}"

        created = admin.post("/products/", json=product_body(name=name))
        fetched = anon.get(f"/products/by-slug/{created.json()['slug']}")

        assert created.status_code == 201
        assert fetched.json()["name"] == name

    def test_writes_need_an_admin(self, anon: TestClient, user: TestClient) -> None:
        assert anon.post("/products/", json=product_body()).status_code == 401
        assert user.post("/products/", json=product_body()).status_code == 403


class TestReadProduct:
    def test_by_id_sku_and_slug(self, anon: TestClient, make_product: ProductFactory) -> None:
        product = make_product()

        assert anon.get(f"/products/{product['id']}").json() == product
        assert anon.get(f"/products/by-sku/{product['sku']}").json() == product
        assert anon.get(f"/products/by-slug/{product['slug']}").json() == product

    def test_unknown_product_is_404(self, anon: TestClient) -> None:
        assert anon.get("/products/2000000000").status_code == 404
        assert anon.get("/products/by-sku/NO-SUCH-SKU").status_code == 404
        assert anon.get("/products/by-slug/no-such-slug").status_code == 404

    @pytest.mark.parametrize(
        "path", ["/products/2000000000", "/products/by-sku/NO-SUCH", "/products/by-slug/no-such"]
    )
    def test_unknown_product_is_a_problem(self, anon: TestClient, path: str) -> None:
        response = anon.get(path)

        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert (body["type"], body["title"], body["status"]) == (
            "/problems/product-not-found",
            "Product not found",
            404,
        )
        assert body["instance"] == path

    def test_read_shows_the_category_and_the_tags_ordered_by_name(
        self, anon: TestClient, make_product: ProductFactory, make_category: CategoryFactory
    ) -> None:
        category = make_category()
        word = unique()
        tags = [f"z {word}", f'a "quoted", {word}', f"{{brace}} {word}", f"épée {word}"]
        product = make_product(category_id=category["id"], tags=tags, description="Line\nTwo")

        for path in (product["id"], f"by-sku/{product['sku']}", f"by-slug/{product['slug']}"):
            response = anon.get(f"/products/{path}")

            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            # the create answer, built through the ORM (tags in the relationship's order)
            assert response.json() == product
        assert product["category"] == {k: category[k] for k in ("id", "name", "slug")}
        assert len(product["tags"]) == len(tags)

    def test_read_without_category_or_tags(
        self, anon: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product(price="0.10")

        body = anon.get(f"/products/{product['id']}").json()

        assert body == product
        assert (body["category_id"], body["category"], body["tags"]) == (None, None, [])
        assert body["price"] == "0.10"

    def test_a_read_is_one_autocommit_statement(
        self, anon: TestClient, engine: Engine, make_product: ProductFactory
    ) -> None:
        product = make_product(tags=[unique(), unique()])

        for path in (product["id"], f"by-sku/{product['sku']}", f"by-slug/{product['slug']}"):
            with driver_statements(engine) as statements:
                assert anon.get(f"/products/{path}").status_code == 200
            assert len(statements) == 1
            assert statements[0][1] is True  # autocommit: no BEGIN/COMMIT around it

    def test_a_pooled_connection_goes_back_without_autocommit(
        self, settings: CatalogSettings, make_product: ProductFactory
    ) -> None:
        """The read sets autocommit on the raw connection; a QueuePool (pool_size > 0) must not
        hand it to the next transaction that way."""
        product = make_product()
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            read = asyncio.run(read_product(make_reader(engine), product["id"]))
            assert read.sku == product["sku"]
            with engine.connect() as connection:  # the same pooled connection
                driver: Any = connection.connection.driver_connection
                assert driver.autocommit is False
        finally:
            engine.dispose()


class TestUpdateProduct:
    def test_patch_changes_only_the_fields_sent(
        self, admin: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product(tags=["old"], description="keep me")

        response = admin.patch(
            f"/products/{product['id']}", json={"price": "5.00", "tags": ["New"]}
        )

        body = response.json()
        assert response.status_code == 200
        assert body["price"] == "5.00"
        assert [t["name"] for t in body["tags"]] == ["new"]
        assert (body["name"], body["description"]) == (product["name"], "keep me")

    def test_patch_null_for_a_required_field_is_422(
        self, admin: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product()

        response = admin.patch(f"/products/{product['id']}", json={"price": None})

        assert response.status_code == 422
        assert admin.get(f"/products/{product['id']}").json()["price"] == product["price"]

    def test_patch_can_clear_the_category(
        self, admin: TestClient, make_product: ProductFactory, make_category: CategoryFactory
    ) -> None:
        product = make_product(category_id=make_category()["id"])

        response = admin.patch(f"/products/{product['id']}", json={"category_id": None})

        assert (response.json()["category_id"], response.json()["category"]) == (None, None)

    def test_put_replaces_the_product(
        self, admin: TestClient, make_product: ProductFactory
    ) -> None:
        product = make_product(description="old", tags=["a"])
        replacement = product_body(name=unique("Replaced "), stock_quantity=3)

        response = admin.put(f"/products/{product['id']}", json=replacement)

        body = response.json()
        assert response.status_code == 200
        assert body["id"] == product["id"]
        assert (body["name"], body["sku"], body["stock_quantity"]) == (
            replacement["name"],
            replacement["sku"],
            3,
        )
        assert (body["description"], body["tags"]) == (None, [])
        assert body["slug"] == replacement["name"].lower().replace(" ", "-")

    def test_changing_the_sku_to_a_taken_one_is_409(
        self, admin: TestClient, make_product: ProductFactory
    ) -> None:
        first, second = make_product(), make_product()

        response = admin.patch(f"/products/{second['id']}", json={"sku": first["sku"]})

        assert response.status_code == 409
        assert admin.get(f"/products/{second['id']}").json()["sku"] == second["sku"]

    def test_delete_is_soft(
        self, admin: TestClient, anon: TestClient, make_product: ProductFactory
    ) -> None:
        category = unique("soft-")
        product = make_product(tags=[category])

        response = admin.delete(f"/products/{product['id']}")

        assert response.status_code == 204
        assert anon.get(f"/products/{product['id']}").json()["is_active"] is False
        assert anon.get("/products/", params={"tag": category}).json()["total"] == 0
        inactive = anon.get("/products/", params={"tag": category, "is_active": False}).json()
        assert ids(inactive) == [product["id"]]


class TestListProducts:
    def test_filters_by_price_range_stock_and_tag(
        self, anon: TestClient, make_product: ProductFactory
    ) -> None:
        tag = unique("range-")
        cheap = make_product(price="5.00", tags=[tag])
        middle = make_product(price="15.00", tags=[tag])
        empty = make_product(price="15.50", stock_quantity=0, tags=[tag])
        make_product(price="25.00", tags=[tag])

        in_range = anon.get(
            "/products/", params={"tag": tag, "min_price": "10", "max_price": "20"}
        ).json()
        in_stock = anon.get(
            "/products/", params={"tag": tag, "max_price": "20", "in_stock": True}
        ).json()
        out_of_stock = anon.get("/products/", params={"tag": tag, "in_stock": False}).json()

        assert ids(in_range) == [middle["id"], empty["id"]]
        assert ids(in_stock) == [cheap["id"], middle["id"]]
        assert ids(out_of_stock) == [empty["id"]]

    def test_min_price_above_max_price_is_422(self, anon: TestClient) -> None:
        response = anon.get("/products/", params={"min_price": "20", "max_price": "10"})

        assert response.status_code == 422
        assert response.json()["type"] == "/problems/invalid-price-range"

    def test_category_filter_can_include_sub_categories(
        self, anon: TestClient, make_category: CategoryFactory, make_product: ProductFactory
    ) -> None:
        root = make_category()
        child = make_category(parent_id=root["id"])
        grandchild = make_category(parent_id=child["id"])
        in_root = make_product(category_id=root["id"])
        in_grandchild = make_product(category_id=grandchild["id"])

        direct = anon.get("/products/", params={"category_id": root["id"]}).json()
        subtree = anon.get(
            "/products/", params={"category_id": root["id"], "include_subcategories": True}
        ).json()

        assert ids(direct) == [in_root["id"]]
        assert ids(subtree) == [in_root["id"], in_grandchild["id"]]

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [("price", [1, 2, 0]), ("-price", [0, 2, 1]), ("name", [0, 1, 2]), ("-id", [2, 1, 0])],
    )
    def test_sorts_by_whitelisted_fields(
        self, anon: TestClient, make_product: ProductFactory, sort: str, expected: list[int]
    ) -> None:
        tag = unique("sort-")
        made = [
            make_product(name=unique("A "), price="30.00", tags=[tag]),
            make_product(name=unique("B "), price="10.00", tags=[tag]),
            make_product(name=unique("C "), price="20.00", tags=[tag]),
        ]

        page = anon.get("/products/", params={"tag": tag, "sort": sort}).json()

        assert ids(page) == [made[i]["id"] for i in expected]

    def test_unknown_sort_field_is_422(self, anon: TestClient) -> None:
        response = anon.get("/products/", params={"sort": "hashed_password"})

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["query", "sort"]

    def test_pagination(self, anon: TestClient, make_product: ProductFactory) -> None:
        tag = unique("page-")
        made = [make_product(tags=[tag]) for _ in range(5)]

        page = anon.get("/products/", params={"tag": tag, "page": 2, "page_size": 2}).json()

        assert ids(page) == [made[2]["id"], made[3]["id"]]
        assert (page["total"], page["total_pages"], page["has_next"], page["has_previous"]) == (
            5,
            3,
            True,
            True,
        )

    def test_a_page_of_products_loads_in_a_constant_number_of_statements(
        self,
        admin: TestClient,
        anon: TestClient,
        engine: Engine,
        make_category: CategoryFactory,
    ) -> None:
        def fill(count: int) -> int:
            category = make_category()
            items = [
                product_body(category_id=category["id"], tags=[unique("t"), unique("t")])
                for _ in range(count)
            ]
            assert admin.post("/products/bulk", json={"items": items}).status_code == 201
            return int(category["id"])

        small, large = fill(2), fill(50)
        statements = []
        for category_id in (small, large):
            with count_queries(engine) as counter:
                page = anon.get(
                    "/products/", params={"category_id": category_id, "page_size": 50}
                ).json()
            statements.append(counter.value)
            assert all(len(p["tags"]) == 2 and p["category"] for p in page["items"])

        assert page["total"] == 50
        assert statements == [3, 3]  # count, page with its category (joined), tags (selectin)


class TestSearch:
    def test_q_matches_word_prefixes_in_name_and_description(
        self, anon: TestClient, make_product: ProductFactory
    ) -> None:
        word = unique("zq")
        by_name = make_product(name=f"Ceramic {word}kettle")
        by_description = make_product(description=f"A sturdy {word}kettle for tea")
        make_product(name=f"Ceramic plate {unique('zq')}")

        page = anon.get("/products/", params={"q": f"{word.upper()}KET"}).json()
        both_words = anon.get("/products/", params={"q": f"ceramic {word}"}).json()

        assert ids(page) == [by_name["id"], by_description["id"]]
        assert ids(both_words) == [by_name["id"]]

    @pytest.mark.parametrize(
        "q",
        [
            "'; DROP TABLE catalog.products; --",
            "%",
            "_",
            "\\",
            "a & b | !c",
            ":*",
            "<->",
            "''",
            "(",
            "🎩",
        ],
    )
    def test_sql_and_tsquery_metacharacters_are_harmless(self, anon: TestClient, q: str) -> None:
        response = anon.get("/products/", params={"q": q})

        assert response.status_code == 200
        assert anon.get("/products/", params={"page_size": 1}).status_code == 200

    def test_punctuation_around_words_is_ignored(
        self, anon: TestClient, make_product: ProductFactory
    ) -> None:
        word = unique("zp")
        product = make_product(name=f"Widget {word}")

        page = anon.get("/products/", params={"q": f"'{word}'); --"}).json()

        assert ids(page) == [product["id"]]

    def test_search_uses_the_full_text_index(self, admin_engine: Engine) -> None:
        stmt = select(Product.id).where(search_condition("kettle"))
        with admin_engine.begin() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(
                row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params)
            )

        assert "ix_products_search" in plan


class TestLowStockAndStats:
    def test_low_stock_lists_active_products_at_or_below_the_threshold(
        self,
        admin: TestClient,
        anon: TestClient,
        make_category: CategoryFactory,
        make_product: ProductFactory,
    ) -> None:
        category = make_category()["id"]
        five = make_product(category_id=category, stock_quantity=5)
        zero = make_product(category_id=category, stock_quantity=0)
        make_product(category_id=category, stock_quantity=6)
        inactive = make_product(category_id=category, stock_quantity=1)
        admin.delete(f"/products/{inactive['id']}")

        page = anon.get(
            "/products/low-stock", params={"threshold": 5, "category_id": category}
        ).json()

        assert ids(page) == [zero["id"], five["id"]]

    def test_stats_by_category_are_computed_over_active_products(
        self,
        admin: TestClient,
        anon: TestClient,
        make_category: CategoryFactory,
        make_product: ProductFactory,
    ) -> None:
        category = make_category()
        make_product(category_id=category["id"], price="10.00", stock_quantity=2)
        make_product(category_id=category["id"], price="20.00", stock_quantity=1)
        make_product(category_id=category["id"], price="30.01", stock_quantity=0)
        inactive = make_product(category_id=category["id"], price="999.00", stock_quantity=9)
        admin.delete(f"/products/{inactive['id']}")

        stats = anon.get("/products/stats/by-category").json()

        mine = [s for s in stats if s["category_id"] == category["id"]]
        assert mine == [
            {
                "category_id": category["id"],
                "category_name": category["name"],
                "product_count": 3,
                "average_price": "20.00",
                "min_price": "10.00",
                "max_price": "30.01",
                "total_stock_value": "40.00",
            }
        ]


class TestBulkCreate:
    def test_all_items_are_created(self, admin: TestClient, db: Session) -> None:
        items = [product_body(tags=["bulk"]), product_body(tags=["bulk", "two"])]

        response = admin.post("/products/bulk", json={"items": items})

        assert response.status_code == 201
        assert [p["sku"] for p in response.json()] == [i["sku"] for i in items]
        assert [len(p["tags"]) for p in response.json()] == [1, 2]

    def test_one_bad_item_stores_nothing_and_every_problem_is_listed(
        self, admin: TestClient, db: Session, make_product: ProductFactory
    ) -> None:
        existing = make_product()
        repeated = new_sku()
        items = [
            product_body(),
            product_body(sku=existing["sku"]),
            product_body(sku=repeated),
            product_body(sku=repeated),
        ]

        response = admin.post("/products/bulk", json={"items": items})

        assert response.status_code == 409
        body = response.json()
        assert body["type"] == "/problems/bulk-conflict"
        assert [(e["loc"][2], e["loc"][3], e["type"]) for e in body["errors"]] == [
            (1, "sku", "sku-taken"),
            (2, "sku", "sku-taken"),
            (3, "sku", "sku-taken"),
        ]
        stored = db.scalars(
            select(Product.sku).where(Product.sku.in_([items[0]["sku"], repeated]))
        ).all()
        assert stored == []

    def test_unknown_category_in_one_item_is_422(self, admin: TestClient, db: Session) -> None:
        items = [product_body(), product_body(category_id=2_000_000_000)]

        response = admin.post("/products/bulk", json={"items": items})

        assert response.status_code == 422
        assert response.json()["errors"] == [
            {
                "loc": ["body", "items", 1, "category_id"],
                "msg": "no category 2000000000",
                "type": "unknown-category",
            }
        ]
        assert db.scalar(select(Product.id).where(Product.sku == items[0]["sku"])) is None

    def test_a_schema_error_names_the_item(self, admin: TestClient) -> None:
        items = [product_body(), product_body(price="-1")]

        response = admin.post("/products/bulk", json={"items": items})

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"][:4] == ["body", "items", 1, "price"]
