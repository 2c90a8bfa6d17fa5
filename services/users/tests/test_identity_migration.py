"""The identity-key migration refuses to merge accounts: rows that collide after NFKC + casefold
stop the upgrade with the colliding ids, and nothing is changed until an operator resolves them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from shop_dev.bootstrap import (
    alembic_config,
    bootstrap_roles,
    create_database,
    drop_database,
    role_url,
)
from shop_dev.defaults import role_passwords
from shop_dev.testing import ShopDatabase

BEFORE_KEYS = "a1d3c5e7f901"


@pytest.fixture
def scratch(shop_db: ShopDatabase) -> Iterator[str]:
    name = f"shop_idmig_{uuid.uuid4().hex[:10]}"
    create_database(shop_db.cluster, name)
    try:
        bootstrap_roles(shop_db.cluster, name, role_passwords())
        yield name
    finally:
        drop_database(shop_db.cluster, name)


def test_colliding_identities_stop_the_upgrade_loudly(shop_db: ShopDatabase, scratch: str) -> None:
    url = role_url(shop_db.cluster, "users", role_passwords()["users"], scratch)
    config = alembic_config("users", url)
    command.upgrade(config, BEFORE_KEYS)
    engine = create_engine(url)
    insert = text(
        "INSERT INTO users.users (username, email, hashed_password) VALUES (:u, :e, 'x') RETURNING id"
    )
    try:
        with engine.begin() as conn:
            first = conn.scalar(insert, {"u": "alice", "e": "alice@example.com"})
            second = conn.scalar(insert, {"u": "alice2", "e": "ａｌｉｃｅ@EXAMPLE.com"})  # noqa: RUF001
            conn.scalar(insert, {"u": "bob", "e": "bob@example.com"})

        with pytest.raises(Exception, match="collide") as raised:
            command.upgrade(config, "head")
        assert f"user ids [{first}, {second}]" in str(raised.value)
        with engine.connect() as conn:
            columns = conn.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'users' AND table_name = 'users'"
                )
            ).all()
            version = conn.scalar(text("SELECT version_num FROM users.alembic_version"))
        assert "email_key" not in columns
        assert version == BEFORE_KEYS

        with engine.begin() as conn:  # the operator resolves the collision, then upgrades
            conn.execute(
                text("UPDATE users.users SET email = 'alice2@example.com' WHERE id = :id"),
                {"id": second},
            )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            keys = conn.execute(
                text("SELECT username_key, email_key FROM users.users ORDER BY id")
            ).all()
        assert [tuple(k) for k in keys] == [
            ("alice", "alice@example.com"),
            ("alice2", "alice2@example.com"),
            ("bob", "bob@example.com"),
        ]
    finally:
        engine.dispose()
