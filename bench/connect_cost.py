"""What one request's database connect costs with NullPool: through PgBouncer (md5, our choice;
scram-sha-256 for comparison) vs directly to PostgreSQL. Side by side in one run.

    uv run python bench/connect_cost.py [--n 500]

Writes bench/results/connect_cost.json. Each sample is what a request pays with NullPool:
SQLAlchemy engine.connect() + SELECT 1 + close (the pool's reset-on-return rollback included)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from shop_dev.bootstrap import Cluster, bootstrap_roles, create_database, drop_database, role_url
from shop_dev.defaults import DEFAULT_ADMIN_URL, role_passwords
from shop_dev.pgbouncer import PgBouncer
from shop_dev.stack import free_port

RESULTS = Path(__file__).parent / "results" / "connect_cost.json"


def measure(url: str, n: int) -> dict[str, float]:
    engine = create_engine(url, poolclass=NullPool)
    for _ in range(20):  # warm up: server connections, caches
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        samples.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    samples.sort()
    return {
        "per_request_ms_p50": round(statistics.median(samples), 3),
        "per_request_ms_mean": round(statistics.fmean(samples), 3),
        "per_request_ms_p99": round(samples[int(len(samples) * 0.99) - 1], 3),
        "connects_per_s": round(1000 / statistics.fmean(samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    cluster = Cluster(os.environ.get("SHOP_PG_ADMIN_URL", DEFAULT_ADMIN_URL))
    database = f"shop_bench_{uuid.uuid4().hex[:8]}"
    passwords = role_passwords()
    create_database(cluster, database)
    bouncers: list[PgBouncer] = []
    try:
        bootstrap_roles(cluster, database, passwords)
        users = {f"{s}_svc": p for s, p in passwords.items()}
        conn = f"host={cluster.host} port={cluster.port} dbname={database}"
        results: dict[str, dict[str, float]] = {}
        for auth in ("md5", "scram-sha-256"):
            bouncer = PgBouncer(
                Path(tempfile.mkdtemp(prefix="bench-pgb-")),
                port=free_port(),
                databases={database: conn},
                users=users,
                auth_type=auth,
            )
            bouncer.start()
            bouncers.append(bouncer)
            url = role_url(
                cluster,
                "catalog",
                passwords["catalog"],
                database,
                host=bouncer.host,
                port=bouncer.port,
            )
            results[f"pgbouncer_{auth}"] = measure(url, args.n)
        results["direct_postgresql"] = measure(
            role_url(cluster, "catalog", passwords["catalog"], database), args.n
        )
        report = {
            "n": args.n,
            "postgres_auth_note": "direct PostgreSQL auth is whatever pg_hba.conf says for 127.0.0.1 "
            "(trust on python-svc machines; scram-sha-256 costs ~12 ms there, see shared notes §3.2)",
            "results": results,
            "run_id": secrets.token_hex(4),
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    finally:
        for bouncer in bouncers:
            bouncer.stop()
        drop_database(cluster, database)


if __name__ == "__main__":
    main()
