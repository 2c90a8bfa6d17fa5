"""the two hottest statements as PL/pgSQL functions, so each backend plans them once

A service logs in to PgBouncer (transaction pooling) for every statement, so a statement cannot
be prepared, and PostgreSQL parsed, analysed and planned the one-product reservation and the
product read on every call: 0.23 and 0.19 ms of a backend's CPU, a third of the reservation's and
half of the read's (docs/PERFORMANCE.md, eighth pass). A PL/pgSQL function keeps the plans of its
statements for the life of the backend, and PgBouncer's server connections live for an hour.

Each function is the statement the service ran before, unchanged in meaning: one statement, one
snapshot, the same locks, the same errors (a duplicate id is still pk_reservations). They run
with the caller's rights (SECURITY INVOKER) and, like every object of the schema, only catalog's
role can reach them. Every name is schema-qualified: nothing depends on search_path. To change
one, add a migration with CREATE OR REPLACE FUNCTION.

Revision ID: e3b5d7f9a1c2
Revises: c5d8e2a41f7b
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e3b5d7f9a1c2"
down_revision: str | None = "c5d8e2a41f7b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One product (nearly every order), in one statement run in autocommit. The conditional UPDATE
# takes the stock only if the product is active, has enough, and the reservation id is new; the
# reservation and its line are inserted FROM what it returned, so nothing is written unless stock
# was taken, and a miss leaves nothing behind. The final SELECT tells why it missed, from the
# statement's snapshot: the id exists (id_taken), the product is unknown (is_active NULL) or
# inactive, or its stock is short. The UPDATE waits for a row lock only when the version it sees
# matches its WHERE, so a request for a sold-out product fails without queueing. The reservation
# insert has no ON CONFLICT: a concurrent request with the same id fails the whole statement on
# pk_reservations (its stock update undone with it). The line is selected FROM `created`, so the
# reservation is inserted first: that request fails on pk_reservations, never on the lines'
# unique (reservation_id, product_id). Always one row; line_* and expires_at are NULL when
# nothing was taken.
RESERVE_ONE = """
CREATE FUNCTION catalog.reserve_one(
    p_reservation_id uuid,
    p_product_id integer,
    p_quantity integer,
    p_status varchar,
    p_ttl interval
) RETURNS TABLE (
    id_taken boolean,
    is_active boolean,
    stock_quantity integer,
    line_name varchar,
    line_sku varchar,
    line_unit_price numeric,
    expires_at timestamptz
) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH taken AS (
        UPDATE catalog.products AS product
        SET stock_quantity = product.stock_quantity - p_quantity, updated_at = now()
        WHERE product.id = p_product_id
            AND product.stock_quantity >= p_quantity
            AND product.is_active
            AND NOT EXISTS (
                SELECT FROM catalog.reservations AS r WHERE r.id = p_reservation_id
            )
        RETURNING product.name, product.sku, product.price
    ), created AS (
        INSERT INTO catalog.reservations (id, status, expires_at)
        SELECT p_reservation_id, p_status, now() + p_ttl
        FROM taken
        RETURNING catalog.reservations.id, catalog.reservations.expires_at
    ), line AS (
        INSERT INTO catalog.reservation_items
            (reservation_id, product_id, quantity, unit_price, name, sku)
        SELECT created.id, p_product_id, p_quantity, taken.price, taken.name, taken.sku
        FROM created JOIN taken ON true
        RETURNING
            catalog.reservation_items.name,
            catalog.reservation_items.sku,
            catalog.reservation_items.unit_price
    )
    SELECT
        EXISTS (SELECT FROM catalog.reservations AS r WHERE r.id = p_reservation_id),
        product.is_active,
        product.stock_quantity,
        line.name,
        line.sku,
        line.unit_price,
        created.expires_at
    FROM (SELECT 1) AS one_row
    LEFT JOIN catalog.products AS product ON product.id = p_product_id
    LEFT JOIN line ON true
    LEFT JOIN created ON true;
END
$fn$
"""

# GET /products/{id}: the product, its category and its tags (ordered by name, as the ORM's
# relationship orders them; NULL when it has none), in the columns and order of catalog's
# products/lookup.py. No row: no such product.
PRODUCT_BY_ID = """
CREATE FUNCTION catalog.product_by_id(p_id integer) RETURNS TABLE (
    id integer,
    name varchar,
    slug varchar,
    sku varchar,
    description text,
    price numeric,
    stock_quantity integer,
    is_active boolean,
    category_id integer,
    created_at timestamptz,
    updated_at timestamptz,
    joined_category_id integer,
    category_name varchar,
    category_slug varchar,
    tags json
) LANGUAGE plpgsql STABLE AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT
        product.id,
        product.name,
        product.slug,
        product.sku,
        product.description,
        product.price,
        product.stock_quantity,
        product.is_active,
        product.category_id,
        product.created_at,
        product.updated_at,
        category.id,
        category.name,
        category.slug,
        (
            SELECT json_agg(json_build_object('id', tag.id, 'name', tag.name) ORDER BY tag.name)
            FROM catalog.product_tags AS pt JOIN catalog.tags AS tag ON tag.id = pt.tag_id
            WHERE pt.product_id = product.id
        )
    FROM catalog.products AS product
    LEFT JOIN catalog.categories AS category ON category.id = product.category_id
    WHERE product.id = p_id;
END
$fn$
"""


def upgrade() -> None:
    op.execute(RESERVE_ONE)
    op.execute(PRODUCT_BY_ID)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS catalog.product_by_id(integer)")
    op.execute(
        "DROP FUNCTION IF EXISTS catalog.reserve_one(uuid, integer, integer, varchar, interval)"
    )
