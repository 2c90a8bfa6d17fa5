"""/categories and /tags: a tree with derived unique slugs; reads public, writes admin."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from catalog.models import Category
from shop_common.db import count_queries

from .conftest import CategoryFactory, ProductFactory, unique


class TestCreateCategory:
    def test_slug_is_derived_from_the_name(self, admin: TestClient) -> None:
        name = f"Garden Tools {unique()}"
        response = admin.post("/categories/", json={"name": name, "description": "Spades"})

        assert response.status_code == 201
        body = response.json()
        assert body["slug"] == name.lower().replace(" ", "-")
        assert body["description"] == "Spades"
        assert body["parent"] is None
        assert body["children"] == []

    def test_accented_and_non_latin_names_get_readable_slugs(self, admin: TestClient) -> None:
        tag = unique()
        response = admin.post("/categories/", json={"name": f"Thé & Café {tag}"})
        other = admin.post("/categories/", json={"name": f"家具 {tag}"})

        assert response.json()["slug"] == f"the-cafe-{tag}"
        assert other.json()["slug"] == f"家具-{tag}"

    def test_duplicate_slug_is_409(self, admin: TestClient, db: Session) -> None:
        name = unique("Shoes ")
        assert admin.post("/categories/", json={"name": name}).status_code == 201

        again = admin.post("/categories/", json={"name": name.upper()})

        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["type"] == "/problems/category-slug-taken"
        slug = name.lower().replace(" ", "-")
        assert db.scalars(select(Category.name).where(Category.slug == slug)).all() == [name]

    def test_a_name_without_letters_or_digits_needs_an_explicit_slug(
        self, admin: TestClient
    ) -> None:
        refused = admin.post("/categories/", json={"name": "!!!"})
        slug = unique("bang-")
        accepted = admin.post("/categories/", json={"name": "!!!", "slug": slug})

        assert refused.status_code == 422
        assert refused.json()["type"] == "/problems/empty-slug"
        assert accepted.status_code == 201
        assert accepted.json()["slug"] == slug

    def test_a_slug_not_in_slug_form_is_422(self, admin: TestClient) -> None:
        response = admin.post("/categories/", json={"name": "Bad", "slug": "Not A Slug"})

        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "slug"]

    def test_unknown_parent_is_422(self, admin: TestClient) -> None:
        response = admin.post("/categories/", json={"name": unique(), "parent_id": 2_000_000_000})

        assert response.status_code == 422
        assert response.json()["type"] == "/problems/parent-category-not-found"

    def test_anonymous_and_non_admin_users_cannot_create(
        self, anon: TestClient, user: TestClient
    ) -> None:
        assert anon.post("/categories/", json={"name": unique()}).status_code == 401
        assert user.post("/categories/", json={"name": unique()}).status_code == 403


class TestCategoryTree:
    def test_parent_and_children_are_shown(
        self, anon: TestClient, make_category: CategoryFactory
    ) -> None:
        root = make_category()
        first = make_category(parent_id=root["id"])
        second = make_category(parent_id=root["id"])

        shown = anon.get(f"/categories/{root['id']}").json()
        child = anon.get(f"/categories/{first['id']}").json()

        assert [c["id"] for c in shown["children"]] == [first["id"], second["id"]]
        assert child["parent"] == {"id": root["id"], "name": root["name"], "slug": root["slug"]}
        assert child["parent_id"] == root["id"]

    def test_moving_a_category_under_its_descendant_is_409(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        root = make_category()
        child = make_category(parent_id=root["id"])
        grandchild = make_category(parent_id=child["id"])

        response = admin.patch(f"/categories/{root['id']}", json={"parent_id": grandchild["id"]})
        itself = admin.patch(f"/categories/{root['id']}", json={"parent_id": root["id"]})

        assert response.status_code == 409
        assert response.json()["type"] == "/problems/category-cycle"
        assert itself.status_code == 409
        assert admin.get(f"/categories/{root['id']}").json()["parent_id"] is None

    def test_the_tree_is_at_most_five_levels_deep(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        chain = [make_category()]
        for _ in range(4):
            chain.append(make_category(parent_id=chain[-1]["id"]))

        sixth = admin.post("/categories/", json={"name": unique(), "parent_id": chain[-1]["id"]})
        other_root = make_category()
        other_child = make_category(parent_id=other_root["id"])
        move = admin.patch(f"/categories/{other_root['id']}", json={"parent_id": chain[-2]["id"]})

        assert sixth.status_code == 409
        assert sixth.json()["type"] == "/problems/category-too-deep"
        assert move.status_code == 409
        assert admin.get(f"/categories/{other_child['id']}").json()["parent_id"] == other_root["id"]

    def test_moving_to_the_root_and_back(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        root = make_category()
        child = make_category(parent_id=root["id"])

        to_root = admin.patch(f"/categories/{child['id']}", json={"parent_id": None})
        back = admin.patch(f"/categories/{child['id']}", json={"parent_id": root["id"]})

        assert to_root.status_code == 200
        assert to_root.json()["parent"] is None
        assert back.json()["parent"]["id"] == root["id"]

    def test_rename_keeps_the_slug_unless_one_is_sent(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        category = make_category()
        new_slug = unique("renamed-")

        renamed = admin.patch(f"/categories/{category['id']}", json={"name": "Renamed"})
        reslugged = admin.patch(f"/categories/{category['id']}", json={"slug": new_slug})
        null_name = admin.patch(f"/categories/{category['id']}", json={"name": None})

        assert renamed.json()["name"] == "Renamed"
        assert renamed.json()["slug"] == category["slug"]
        assert reslugged.json()["slug"] == new_slug
        assert null_name.status_code == 422

    def test_list_filters_by_parent(self, anon: TestClient, make_category: CategoryFactory) -> None:
        root = make_category()
        child = make_category(parent_id=root["id"])

        page = anon.get("/categories/", params={"parent_id": root["id"]}).json()

        assert page["total"] == 1
        assert [c["id"] for c in page["items"]] == [child["id"]]

    def test_a_page_of_categories_loads_in_a_constant_number_of_statements(
        self, anon: TestClient, engine: Engine, make_category: CategoryFactory
    ) -> None:
        statements = []
        for size in (1, 8):
            root = make_category()
            for _ in range(size):
                make_category(parent_id=make_category(parent_id=root["id"])["id"])
            with count_queries(engine) as counter:
                page = anon.get(
                    "/categories/", params={"parent_id": root["id"], "page_size": 100}
                ).json()
            statements.append(counter.value)
            assert [len(c["children"]) for c in page["items"]] == [1] * size

        assert statements == [3, 3]  # count, page with parents (joined), children (selectin)

    def test_the_four_default_categories_exist(self, anon: TestClient) -> None:
        page = anon.get("/categories/", params={"roots_only": True, "page_size": 100}).json()
        slugs = {c["slug"] for c in page["items"]}

        assert {"electronics", "books", "clothing", "home-garden"} <= slugs


class TestDeleteCategory:
    def test_an_empty_category_is_deleted(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        category = make_category()

        response = admin.delete(f"/categories/{category['id']}")

        assert response.status_code == 204
        assert admin.get(f"/categories/{category['id']}").status_code == 404

    def test_a_category_with_children_is_409(
        self, admin: TestClient, make_category: CategoryFactory
    ) -> None:
        root = make_category()
        make_category(parent_id=root["id"])

        response = admin.delete(f"/categories/{root['id']}")

        assert response.status_code == 409
        body: dict[str, Any] = response.json()
        assert body["type"] == "/problems/category-in-use"
        assert (body["has_children"], body["has_products"]) == (True, False)

    def test_a_category_with_products_is_409_even_if_they_are_inactive(
        self, admin: TestClient, make_category: CategoryFactory, make_product: ProductFactory
    ) -> None:
        category = make_category()
        product = make_product(category_id=category["id"])
        admin.delete(f"/products/{product['id']}")

        response = admin.delete(f"/categories/{category['id']}")

        assert response.status_code == 409
        assert response.json()["has_products"] is True

    def test_unknown_category_is_404(self, admin: TestClient) -> None:
        assert admin.delete("/categories/2000000000").status_code == 404
        assert admin.get("/categories/0").status_code == 422


class TestTags:
    def test_tags_are_created_on_first_use_and_normalised(
        self, anon: TestClient, make_product: ProductFactory
    ) -> None:
        word = unique("tag")
        make_product(tags=[f"  {word.upper()}   Blue ", f"{word} blue"])
        make_product(tags=[f"{word} BLUE"])

        page = anon.get("/tags/", params={"q": f" {word.upper()} "}).json()

        assert [t["name"] for t in page["items"]] == [f"{word} blue"]
        assert page["total"] == 1

    def test_tag_search_treats_like_wildcards_literally(self, anon: TestClient) -> None:
        page = anon.get("/tags/", params={"q": "%_"}).json()

        assert page["total"] == 0
