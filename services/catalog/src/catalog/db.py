"""Schema-qualified metadata: every table of this service lives in the "catalog" schema."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from shop_common.db import NAMING_CONVENTION

SCHEMA = "catalog"
metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    metadata = metadata
