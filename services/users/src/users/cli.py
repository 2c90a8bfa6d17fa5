"""`users` command line: `users serve` runs the API; `users create-superuser` adds an admin."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from shop_common import server


def _create_superuser(username: str, email: str) -> int:
    from pydantic import TypeAdapter, ValidationError

    from shop_common.db import make_engine, make_sessionmaker
    from users.accounts.schemas import UserCreate
    from users.auth.passwords import Passwords
    from users.config import UsersSettings
    from users.superuser import ensure_superuser

    password = os.environ.get("SUPERUSER_PASSWORD") or getpass.getpass("Password: ")
    try:
        TypeAdapter(UserCreate).validate_python(
            {"username": username, "email": email, "password": password}
        )
    except ValidationError as exc:  # loc and msg only: the input would echo the password
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            sys.stderr.write(f"invalid {field}: {error['msg']}\n")
        return 2
    settings = UsersSettings()
    passwords = Passwords(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
    )
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            created = ensure_superuser(
                session, passwords, username=username, email=email, password=password
            )
    finally:
        engine.dispose()
    sys.stdout.write(
        f"created superuser {username}\n" if created else f"{username} or {email} already exists\n"
    )
    return 0 if created else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="users")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    create = sub.add_parser(
        "create-superuser",
        help="create an administrator (password from SUPERUSER_PASSWORD or a prompt)",
    )
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        server.serve("users.main:create_app", host=args.host, port=args.port)
    elif args.command == "create-superuser":
        sys.exit(_create_superuser(args.username, args.email))
