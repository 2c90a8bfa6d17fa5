-- Idempotent bootstrap of ONE database for the shop: schemas and one least-privilege login role
-- per service. Run as a superuser, connected to the target database, after setting:
--   shop.users_password, shop.catalog_password, shop.orders_password   (custom GUCs, session-level)
--   shop.statement_timeout                                               (e.g. '5s')
-- Used by the local launcher and the test harness (shop_dev.bootstrap) and by the postgres
-- container's init script (deploy/postgres/initdb/10-shop.sh). Safe to run again: roles get their
-- passwords and settings re-applied; nothing is dropped.

DO $bootstrap$
DECLARE
    svc text;
    role_name text;
    pw text;
    db text := current_database();
    timeout text := coalesce(nullif(current_setting('shop.statement_timeout', true), ''), '5s');
BEGIN
    -- Roles are the cluster's, not this database's: two runs at once (two stacks starting side by
    -- side, on two databases) would update the same role rows and one would fail with "tuple
    -- concurrently updated". This lock on the shared catalog is cluster-wide and conflicts with
    -- itself, so runs take turns (until this block's transaction ends); logins only read pg_authid.
    LOCK TABLE pg_catalog.pg_authid IN SHARE ROW EXCLUSIVE MODE;
    FOREACH svc IN ARRAY ARRAY['users', 'catalog', 'orders'] LOOP
        role_name := svc || '_svc';
        pw := current_setting('shop.' || svc || '_password', true);
        IF pw IS NULL OR pw = '' THEN
            RAISE EXCEPTION 'shop.%_password is not set', svc;
        END IF;
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', role_name);
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another run (or a concurrent test session) created it first
        END;
        EXECUTE format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
                       role_name, pw);
        EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', role_name, timeout);
        EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', role_name, '60s');
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', svc, role_name);
        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', svc, role_name);
        -- Convenience only: the code schema-qualifies everything and never relies on search_path.
        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = %I', role_name, db, svc);
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', db, role_name);
    END LOOP;
    -- No role may create objects in public or read another service's schema.
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM PUBLIC';
    FOREACH svc IN ARRAY ARRAY['users', 'catalog', 'orders'] LOOP
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', svc);
    END LOOP;
END
$bootstrap$;
