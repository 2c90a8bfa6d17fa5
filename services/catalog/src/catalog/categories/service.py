"""Categories (a tree, at most MAX_DEPTH levels, never a cycle) and tags; flushes, never commits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, exists, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from catalog.categories.exceptions import (
    CategoryCycle,
    CategoryInUse,
    CategoryNotFound,
    CategorySlugTaken,
    CategoryTooDeep,
    EmptySlug,
    ParentCategoryNotFound,
)
from catalog.categories.schemas import CategoryCreate, CategoryUpdate
from catalog.models import Category, Product, Tag
from catalog.slugs import slugify
from shop_common.db import constraint_name
from shop_common.schemas import PageParams, paginate

MAX_DEPTH = 5
# Serializes moves inside the tree: two concurrent moves could otherwise each pass the cycle check
# and together form a cycle. Transaction-scoped, so it is safe through PgBouncer.
_TREE_LOCK_KEY = 0x0CA7_0001

_FOR_READ = (joinedload(Category.parent), selectinload(Category.children))

_ANCESTORS = text(
    """
    WITH RECURSIVE up(id, parent_id, depth) AS (
        SELECT id, parent_id, 1 FROM catalog.categories WHERE id = :id
        UNION ALL
        SELECT c.id, c.parent_id, up.depth + 1
        FROM catalog.categories c JOIN up ON c.id = up.parent_id
        WHERE up.depth <= :limit
    )
    SELECT id FROM up ORDER BY depth
    """
)
_SUBTREE_HEIGHT = text(
    """
    WITH RECURSIVE down(id, depth) AS (
        SELECT id, 1 FROM catalog.categories WHERE id = :id
        UNION ALL
        SELECT c.id, down.depth + 1
        FROM catalog.categories c JOIN down ON c.parent_id = down.id
        WHERE down.depth <= :limit
    )
    SELECT max(depth) FROM down
    """
)


def subtree_ids(category_id: int) -> Select[tuple[int]]:
    """Ids of a category and all its descendants (a recursive CTE; for IN filters)."""
    down = select(Category.id).where(Category.id == category_id).cte("down", recursive=True)
    down = down.union_all(select(Category.id).join(down, Category.parent_id == down.c.id))
    return select(down.c.id)


def get_category(session: Session, category_id: int) -> Category:
    category = session.scalar(
        select(Category)
        .where(Category.id == category_id)
        .options(*_FOR_READ)
        .execution_options(populate_existing=True)
    )
    if category is None:
        raise CategoryNotFound(f"no category {category_id}", category_id=category_id)
    return category


def find_category(session: Session, category_id: int) -> Category | None:
    return session.get(Category, category_id)


def list_categories(
    session: Session, params: PageParams, *, parent_id: int | None, roots_only: bool
) -> tuple[list[Category], int]:
    stmt = select(Category).options(*_FOR_READ).order_by(Category.id)
    if parent_id is not None:
        stmt = stmt.where(Category.parent_id == parent_id)
    if roots_only:
        stmt = stmt.where(Category.parent_id.is_(None))
    return paginate(session, stmt, params)


def _ancestors(session: Session, category_id: int) -> list[int]:
    """The category itself first, then its parent, up to the root."""
    return list(session.scalars(_ANCESTORS, {"id": category_id, "limit": MAX_DEPTH + 1}))


def _height(session: Session, category_id: int) -> int:
    return int(session.scalar(_SUBTREE_HEIGHT, {"id": category_id, "limit": MAX_DEPTH + 1}) or 1)


def _check_parent(session: Session, parent_id: int, *, moving: int | None, height: int) -> None:
    if find_category(session, parent_id) is None:
        raise ParentCategoryNotFound(f"no category {parent_id}", parent_id=parent_id)
    chain = _ancestors(session, parent_id)
    if moving is not None and moving in chain:
        raise CategoryCycle(
            f"category {parent_id} is category {moving} or one of its descendants",
            parent_id=parent_id,
        )
    if len(chain) + height > MAX_DEPTH:
        raise CategoryTooDeep(
            f"the tree would be deeper than {MAX_DEPTH} levels", max_depth=MAX_DEPTH
        )


def _flush(session: Session, slug: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        if constraint_name(exc) == "uq_categories_slug":
            raise CategorySlugTaken(f"slug {slug!r} is already in use", slug=slug) from exc
        if constraint_name(exc) == "fk_categories_parent_id_categories":
            raise ParentCategoryNotFound("the parent category no longer exists") from exc
        raise


def _slug_for(name: str, slug: str | None) -> str:
    result = slug or slugify(name)
    if not result:
        raise EmptySlug("the name has no letter or digit to derive a slug from; send a slug")
    return result


def create_category(session: Session, data: CategoryCreate) -> Category:
    if data.parent_id is not None:
        session.execute(select(func.pg_advisory_xact_lock(_TREE_LOCK_KEY)))
        _check_parent(session, data.parent_id, moving=None, height=1)
    category = Category(
        name=data.name,
        slug=_slug_for(data.name, data.slug),
        description=data.description,
        parent_id=data.parent_id,
    )
    session.add(category)
    _flush(session, category.slug)
    return get_category(session, category.id)


def update_category(session: Session, category_id: int, data: CategoryUpdate) -> Category:
    changes: dict[str, Any] = data.model_dump(exclude_unset=True)
    if "parent_id" in changes:
        session.execute(select(func.pg_advisory_xact_lock(_TREE_LOCK_KEY)))
    category = get_category(session, category_id)
    if changes.get("parent_id") is not None and changes["parent_id"] != category.parent_id:
        _check_parent(
            session,
            changes["parent_id"],
            moving=category.id,
            height=_height(session, category.id),
        )
    for field, value in changes.items():
        setattr(category, field, value)
    _flush(session, changes.get("slug", category.slug))
    return get_category(session, category_id)


def delete_category(session: Session, category_id: int) -> None:
    category = get_category(session, category_id)
    has_children = bool(category.children)
    has_products = bool(session.scalar(select(exists().where(Product.category_id == category_id))))
    if has_children or has_products:
        raise CategoryInUse(
            f"category {category_id} still has products or sub-categories",
            has_products=has_products,
            has_children=has_children,
        )
    session.delete(category)
    try:
        session.flush()
    except IntegrityError as exc:  # a product or child was added concurrently
        raise CategoryInUse(f"category {category_id} is still referenced") from exc


def tags_named(session: Session, names: Iterable[str]) -> list[Tag]:
    """Tags for these (already normalised) names, created on first use; ordered by name.
    Inserted in sorted order with ON CONFLICT DO NOTHING, so concurrent creators cannot deadlock."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    session.execute(
        insert(Tag)
        .values([{"name": n} for n in wanted])
        .on_conflict_do_nothing(index_elements=[Tag.name])
    )
    return list(session.scalars(select(Tag).where(Tag.name.in_(wanted)).order_by(Tag.name)))


def list_tags(session: Session, params: PageParams, *, prefix: str | None) -> tuple[list[Tag], int]:
    stmt = select(Tag).order_by(Tag.name)
    if prefix:
        stmt = stmt.where(Tag.name.startswith(prefix, autoescape=True))
    return paginate(session, stmt, params)
