#!/bin/sh
# PostgreSQL container init script (mounted at /docker-entrypoint-initdb.d, so it runs ONCE, on an
# empty data volume). It runs deploy/postgres/roles.sql — schemas users/catalog/orders and one
# least-privilege login role per service — with the role passwords taken from the environment.
# Nothing secret lives in this file. Changing a password later: re-run roles.sql (it is idempotent)
# or `docker compose down -v` to start from an empty volume.
set -e

: "${USERS_DB_PASSWORD:?USERS_DB_PASSWORD must be set (see .env.example)}"
: "${CATALOG_DB_PASSWORD:?CATALOG_DB_PASSWORD must be set (see .env.example)}"
: "${ORDERS_DB_PASSWORD:?ORDERS_DB_PASSWORD must be set (see .env.example)}"
roles_sql="${SHOP_ROLES_SQL:-/opt/shop/roles.sql}"

# Values travel as psql variables and are quoted by psql (:'name'), so any character is safe.
psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-shop}" \
    --set=users_pw="$USERS_DB_PASSWORD" \
    --set=catalog_pw="$CATALOG_DB_PASSWORD" \
    --set=orders_pw="$ORDERS_DB_PASSWORD" \
    --set=statement_timeout="${DB_STATEMENT_TIMEOUT:-5s}" \
    --set=roles_sql="$roles_sql" <<'SQL'
SET shop.users_password = :'users_pw';
SET shop.catalog_password = :'catalog_pw';
SET shop.orders_password = :'orders_pw';
SET shop.statement_timeout = :'statement_timeout';
\i :roles_sql
SQL
echo "shop: roles users_svc, catalog_svc, orders_svc and their schemas are ready"
