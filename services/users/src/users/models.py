"""ORM models of the users service; every relationship is lazy="raise"."""

from __future__ import annotations

from users.db import Base

__all__ = ["Base"]
