"""an order's completion as a PL/pgSQL function, so each backend plans it once

A service logs in to PgBouncer (transaction pooling) for every statement, so a statement cannot
be prepared, and PostgreSQL parsed, analysed and planned the completion of every order: 0.18 ms
of a backend's CPU, a quarter of the statement's (docs/PERFORMANCE.md, eighth pass). A PL/pgSQL
function keeps the plans of its statements for the life of the backend, and PgBouncer's server
connections live for an hour.

The function is the statement the placement flow and the recovery job ran before, unchanged in
meaning: one statement, one snapshot, the same deferred check of the total at commit. It runs
with the caller's rights (SECURITY INVOKER) and, like every object of the schema, only orders'
role can reach it. Every name is schema-qualified: nothing depends on search_path. To change it,
add a migration with CREATE OR REPLACE FUNCTION.

Revision ID: f4c6e8a0b2d3
Revises: 9115a01f59c2
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f4c6e8a0b2d3"
down_revision: str | None = "9115a01f59c2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `placing` -> `pending` with the total, and the items, in one statement: the UPDATE is
# conditional on `placing`, and the lines (one array per column, in step) are inserted only when
# it matched (they join its RETURNING). ON CONFLICT: an order left `placing` with its items by an
# earlier version of the flow. No row: the order was no longer `placing`, nothing was written.
COMPLETE_PLACING = """
CREATE FUNCTION orders.complete_placing(
    p_order_id integer,
    p_total_amount numeric,
    p_product_ids integer[],
    p_product_names varchar[],
    p_skus varchar[],
    p_quantities integer[],
    p_unit_prices numeric[],
    p_total_prices numeric[]
) RETURNS TABLE (
    order_number varchar,
    user_id integer,
    created_at timestamptz,
    updated_at timestamptz
) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH done AS (
        UPDATE orders.orders AS o
        SET status = 'pending', total_amount = p_total_amount, updated_at = now()
        WHERE o.id = p_order_id AND o.status = 'placing'
        RETURNING o.order_number, o.user_id, o.created_at, o.updated_at
    ), items AS (
        INSERT INTO orders.order_items
            (order_id, product_id, product_name, sku, quantity, unit_price, total_price)
        SELECT
            p_order_id,
            line.product_id,
            line.product_name,
            line.sku,
            line.quantity,
            line.unit_price,
            line.total_price
        FROM done JOIN unnest(
            p_product_ids, p_product_names, p_skus, p_quantities, p_unit_prices, p_total_prices
        ) AS line (product_id, product_name, sku, quantity, unit_price, total_price) ON true
        ON CONFLICT (order_id, product_id) DO NOTHING
    )
    SELECT done.order_number, done.user_id, done.created_at, done.updated_at FROM done;
END
$fn$
"""


def upgrade() -> None:
    op.execute(COMPLETE_PLACING)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS orders.complete_placing("
        "integer, numeric, integer[], varchar[], varchar[], integer[], numeric[], numeric[])"
    )
