"""Path and query aliases shared by the catalog routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

INT4_MAX = 2**31 - 1

# An id int4 cannot hold is a 422, never a DataError.
CategoryId = Annotated[int, Path(ge=1, le=INT4_MAX)]
ProductId = Annotated[int, Path(ge=1, le=INT4_MAX)]
