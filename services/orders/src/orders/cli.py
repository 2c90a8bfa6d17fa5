"""`orders` command line: `orders serve` runs the API with uvicorn."""

from __future__ import annotations

import argparse

from shop_common import server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="orders")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        server.serve("orders.main:create_app", host=args.host, port=args.port)
