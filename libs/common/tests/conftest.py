"""Fixtures for shop_common's own tests: a tiny service app on a scratch schema of the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from shop_common.app import ServiceSpec, build_service_app
from shop_common.settings import ShopSettings
from shop_dev.testing import ShopDatabase

SCRATCH_SCHEMA = "common_scratch"
ClientFactory = Callable[..., TestClient]


@pytest.fixture(scope="session")
def scratch_alembic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Alembic script directory with one revision, so readiness has a head to compare with."""
    root = tmp_path_factory.mktemp("alembic")
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "migrations" / "versions" / "0001_scratch.py").write_text(
        'revision = "0001"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n'
    )
    return root / "alembic.ini"


@pytest.fixture(scope="session")
def scratch_db(shop_db: ShopDatabase) -> str:
    """Superuser URL of the test database, with a scratch schema at revision 0001."""
    engine = create_engine(shop_db.admin_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCRATCH_SCHEMA}"))
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {SCRATCH_SCHEMA}.alembic_version "
                "(version_num varchar(32) PRIMARY KEY)"
            )
        )
        conn.execute(text(f"DELETE FROM {SCRATCH_SCHEMA}.alembic_version"))
        conn.execute(text(f"INSERT INTO {SCRATCH_SCHEMA}.alembic_version VALUES ('0001')"))
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {SCRATCH_SCHEMA}.notes "
                "(id serial PRIMARY KEY, body text NOT NULL UNIQUE, n int CHECK (n < 100))"
            )
        )
    engine.dispose()
    return shop_db.admin_url


def make_settings(shop_db: ShopDatabase, **overrides: object) -> ShopSettings:
    kwargs = shop_db.settings_kwargs("catalog") | overrides
    return ShopSettings(**kwargs)


def build_app(
    settings: ShopSettings, alembic_ini: Path, router: APIRouter | None = None
) -> FastAPI:
    spec = ServiceSpec(
        name="scratch",
        schema=SCRATCH_SCHEMA,
        alembic_ini=alembic_ini,
        routers=[router] if router else [],
    )
    return build_service_app(spec, settings)


@pytest.fixture
def client_for(
    shop_db: ShopDatabase, scratch_db: str, scratch_alembic: Path
) -> Iterator[ClientFactory]:
    clients: list[TestClient] = []

    def _make(router: APIRouter | None = None, **overrides: object) -> TestClient:
        settings = make_settings(shop_db, **({"database_url": scratch_db} | overrides))
        client = TestClient(
            build_app(settings, scratch_alembic, router), raise_server_exceptions=False
        )
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)
