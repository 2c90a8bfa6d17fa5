#!/bin/sh
# Entry point of the PgBouncer container (compose and deploy/k8s): writes auth_file from the role
# passwords in the environment, then replaces itself with PgBouncer (exec: PgBouncer gets the signals).
# No password is committed and none is printed.
set -eu

ini="${PGBOUNCER_INI:-/etc/pgbouncer/pgbouncer.ini}"
auth_file="${PGBOUNCER_AUTH_FILE:-/etc/pgbouncer/userlist.txt}"

umask 077
tmp="$auth_file.tmp.$$"
: >"$tmp"
for entry in users_svc:USERS_DB_PASSWORD catalog_svc:CATALOG_DB_PASSWORD orders_svc:ORDERS_DB_PASSWORD; do
    role="${entry%%:*}"
    var="${entry#*:}"
    eval "password=\${$var:-}"
    if [ -z "$password" ]; then
        echo "pgbouncer: $var must be set (see .env.example)" >&2
        rm -f "$tmp"
        exit 1
    fi
    # auth_file format: "name" "password", a double quote inside a value is written twice.
    escaped=$(printf '%s' "$password" | sed 's/"/""/g')
    printf '"%s" "%s"\n' "$role" "$escaped" >>"$tmp"
done
mv -f "$tmp" "$auth_file"
echo "pgbouncer: wrote $auth_file for users_svc, catalog_svc, orders_svc"

exec pgbouncer "$ini"
