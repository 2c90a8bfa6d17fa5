"""Every service serves /docs and /redoc with its own copies of the scripts and styles: no CDN."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

ClientFactory = Callable[..., TestClient]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_assets_the_service_serves(
    client_for: ClientFactory, page: str
) -> None:
    client = client_for()

    response = client.get(page)

    assert response.status_code == 200
    assert re.findall(r"https?://", response.text) == []
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', response.text)
    assert assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_docs_are_not_part_of_the_spec(client_for: ClientFactory) -> None:
    paths = client_for().get("/openapi.json").json()["paths"]

    assert [p for p in paths if p.startswith(("/docs", "/redoc"))] == []
