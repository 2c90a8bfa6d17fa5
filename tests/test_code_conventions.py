"""Conventions from CONTRIBUTING.md that no linter knows, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, Table

from catalog.models import Reservation
from catalog.models import ReservationStatus as CatalogReservationStatus
from orders.catalog_client import ReservationStatus as OrdersReservationStatus
from orders.config import OrdersSettings

ROOT = Path(__file__).resolve().parents[1]
SERVICE_SOURCES = sorted((ROOT / "services").glob("*/src/**/*.py"))
STATUSES = {"held", "committed", "released", "expired"}


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_reservation_statuses_are_one_enum_on_each_side_of_the_wire() -> None:
    """catalog owns the statuses (and its DB check constraint allows exactly them); orders keeps
    its own copy of the wire values, since it may not import catalog."""
    table = Reservation.__table__
    assert isinstance(table, Table)
    check = next(
        c
        for c in table.constraints
        if isinstance(c, CheckConstraint) and "status_known" in str(c.name)
    )
    allowed = {s.strip(" '") for s in str(check.sqltext).split("(", 1)[1].rstrip(")").split(",")}

    assert set(CatalogReservationStatus) == STATUSES
    assert set(OrdersReservationStatus) == STATUSES
    assert allowed == STATUSES


@pytest.mark.parametrize("path", SERVICE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_bare_reservation_status_strings(path: Path) -> None:
    """A status is named through ReservationStatus, never spelt as a bare string."""
    if path.name in {"catalog_client.py", "models.py"}:  # where the enums are defined
        return
    bare = [(line, value) for line, value in _string_constants(path) if value in STATUSES]
    assert bare == [], f"{path}: use ReservationStatus instead of {bare}"


@pytest.mark.parametrize("path", SERVICE_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_handlers_take_the_sessionmaker_from_shop_common(path: Path) -> None:
    """Handlers own transactions through SessionDep or TransactionFactoryDep (shop_common.db),
    not by reading app.state themselves; only the lifespan and its background jobs do."""
    if path.name in {"main.py", "sweeper.py"}:
        return
    assert "request.app.state.sessionmaker" not in path.read_text()


def test_orders_has_no_test_only_settings() -> None:
    """Fault injection lives in the test harness (tests/faults' proxy), not on the order path."""
    assert [name for name in OrdersSettings.model_fields if name.startswith("fault_")] == []
