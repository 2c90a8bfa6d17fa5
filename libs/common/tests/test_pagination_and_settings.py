"""Pagination arithmetic and the settings guard against placeholder secrets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from shop_common.schemas import Page, PageParams
from shop_common.settings import ShopSettings

BASE: dict[str, Any] = {"database_url": "postgresql+psycopg2://u:p@h:6432/shop"}


@pytest.mark.parametrize(
    ("total", "page", "size", "pages", "has_next", "has_previous"),
    [
        (0, 1, 20, 0, False, False),
        (45, 1, 20, 3, True, False),
        (45, 3, 20, 3, False, True),
        (40, 2, 20, 2, False, True),
    ],
)
def test_page_metadata(
    total: int, page: int, size: int, pages: int, has_next: bool, has_previous: bool
) -> None:
    built = Page[int].build([], total, PageParams(page=page, page_size=size))

    assert (built.total_pages, built.has_next, built.has_previous) == (
        pages,
        has_next,
        has_previous,
    )
    assert PageParams(page=page, page_size=size).offset == (page - 1) * size


@pytest.mark.parametrize("token", ["changeme", "dev-internal-token", "short"])
def test_placeholder_or_short_secrets_are_refused_outside_dev(token: str) -> None:
    with pytest.raises(ValidationError, match="internal_api_token"):
        ShopSettings(**BASE, internal_api_token=SecretStr(token), environment="production")


def test_placeholder_secrets_are_accepted_in_dev_mode() -> None:
    settings = ShopSettings(
        **BASE, internal_api_token=SecretStr("dev-internal-token"), environment="dev"
    )

    assert settings.is_dev


def test_production_is_the_default_environment() -> None:
    settings = ShopSettings(
        **BASE, internal_api_token=SecretStr("a-real-secret-of-32-characters!!")
    )

    assert settings.environment == "production"


def test_missing_required_settings_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("INTERNAL_API_TOKEN", raising=False)

    with pytest.raises(ValidationError) as caught:
        ShopSettings()

    missing = sorted(str(e["loc"][0]) for e in caught.value.errors())
    assert missing == ["database_url", "internal_api_token"]
