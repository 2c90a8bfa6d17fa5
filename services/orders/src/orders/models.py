"""ORM models of the orders service; every relationship is lazy="raise"."""

from __future__ import annotations

from orders.db import Base

__all__ = ["Base"]
