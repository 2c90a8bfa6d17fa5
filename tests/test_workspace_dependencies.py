"""What each workspace member installs, read from uv.lock: the gateway gets no database stack
(shop-common without its `db` extra), the services get it (shop-common[db])."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

LOCK = Path(__file__).resolve().parents[1] / "uv.lock"
DATABASE_STACK = {"sqlalchemy", "psycopg2-binary", "alembic"}


def installs(member: str) -> set[str]:
    """Every package `uv sync --package <member>` installs, extras followed as the lock says."""
    packages: dict[str, dict[str, Any]] = {
        p["name"]: p for p in tomllib.loads(LOCK.read_text())["package"]
    }
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(member, ())]
    while todo:
        key = todo.pop()
        if key in done:
            continue
        done.add(key)
        name, extras = key
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(dep["name"], tuple(dep.get("extra", ()))) for dep in deps]
    return {name for name, _ in done}


def test_the_gateway_installs_no_database_stack() -> None:
    assert "shop-common" in installs("gateway")
    assert installs("gateway") & DATABASE_STACK == set()


@pytest.mark.parametrize("service", ["users", "catalog", "orders"])
def test_services_install_the_database_stack(service: str) -> None:
    assert installs(service) >= DATABASE_STACK
