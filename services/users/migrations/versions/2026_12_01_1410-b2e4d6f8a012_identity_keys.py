"""identity keys: usernames and emails unique after NFKC + casefold (IDNA domains)

Revision ID: b2e4d6f8a012
Revises: a1d3c5e7f901
Create Date: 2026-12-01 14:10:00.000000+00:00

Existing rows that become one identity under the new rules (e.g. "alice@example.com" and its
fullwidth copy) are NOT merged: the upgrade stops with the list of colliding
ids, and an operator decides which account keeps the name before running it again.
"""

import unicodedata
from collections import defaultdict
from collections.abc import Sequence

import idna
import sqlalchemy as sa
from alembic import op

revision: str = "b2e4d6f8a012"
down_revision: str | None = "a1d3c5e7f901"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class IdentityCollision(RuntimeError):
    pass


# Frozen copies of users.identity as of this revision: a migration must not change meaning when
# the application code changes later.
def _username_key(username: str) -> str:
    return unicodedata.normalize("NFKC", username).casefold()


def _email_key(email: str) -> str:
    local, _, domain = email.rpartition("@")
    folded = unicodedata.normalize("NFKC", domain).casefold().rstrip(".")
    try:
        domain_key = idna.encode(folded, uts46=True).decode("ascii")
    except idna.IDNAError:
        domain_key = folded
    return f"{unicodedata.normalize('NFKC', local).casefold()}@{domain_key}"


def upgrade() -> None:
    op.add_column("users", sa.Column("username_key", sa.String(200)), schema="users")
    op.add_column("users", sa.Column("email_key", sa.String(400)), schema="users")
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, username, email FROM users.users ORDER BY id")).all()
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    keys = []
    for user_id, username, email in rows:
        u_key, e_key = _username_key(username), _email_key(email)
        by_key["username", u_key].append(user_id)
        by_key["email", e_key].append(user_id)
        keys.append({"id": user_id, "u": u_key, "e": e_key})
    collisions = [
        f"{field} {key!r}: user ids {ids}" for (field, key), ids in by_key.items() if len(ids) > 1
    ]
    if collisions:
        raise IdentityCollision(
            f"{len(collisions)} identities collide after NFKC + casefold normalisation and would "
            "become one account; nothing was changed. Rename or merge these accounts, then run "
            "the migration again:\n  " + "\n  ".join(collisions)
        )
    if keys:
        conn.execute(
            sa.text("UPDATE users.users SET username_key = :u, email_key = :e WHERE id = :id"),
            keys,
        )
    op.alter_column("users", "username_key", nullable=False, schema="users")
    op.alter_column("users", "email_key", nullable=False, schema="users")
    op.create_index("uq_users_username_key", "users", ["username_key"], unique=True, schema="users")
    op.create_index("uq_users_email_key", "users", ["email_key"], unique=True, schema="users")
    op.drop_index("uq_users_email_lower", table_name="users", schema="users")
    op.drop_index("uq_users_username_lower", table_name="users", schema="users")


def downgrade() -> None:
    op.create_index(
        "uq_users_username_lower",
        "users",
        [sa.literal_column("lower(username)")],
        unique=True,
        schema="users",
    )
    op.create_index(
        "uq_users_email_lower",
        "users",
        [sa.literal_column("lower(email)")],
        unique=True,
        schema="users",
    )
    op.drop_index("uq_users_email_key", table_name="users", schema="users")
    op.drop_index("uq_users_username_key", table_name="users", schema="users")
    op.drop_column("users", "email_key", schema="users")
    op.drop_column("users", "username_key", schema="users")
