"""`catalog` command line: `catalog serve` runs the API, `catalog seed` loads the demo catalog."""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy.orm import Session

from shop_common import server
from shop_common.db import make_engine


def _seed() -> int:
    url = os.environ.get("DATABASE_URL") or os.environ.get("MIGRATIONS_DATABASE_URL")
    if not url:
        sys.stderr.write("catalog seed: set DATABASE_URL (or MIGRATIONS_DATABASE_URL)\n")
        return 2
    from catalog.seed import DEMO_PRODUCTS, seed_demo_catalog

    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            created = seed_demo_catalog(session)
    finally:
        engine.dispose()
    sys.stdout.write(
        f"catalog seed: {created} demo products created, "
        f"{len(DEMO_PRODUCTS) - created} already present\n"
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="catalog")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    sub.add_parser("seed", help="load the demo catalog (idempotent)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        server.serve("catalog.main:create_app", host=args.host, port=args.port)
    elif args.command == "seed":
        raise SystemExit(_seed())
