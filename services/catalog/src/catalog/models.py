"""ORM models of the catalog service; every relationship is lazy="raise"."""

from __future__ import annotations

from catalog.db import Base

__all__ = ["Base"]
