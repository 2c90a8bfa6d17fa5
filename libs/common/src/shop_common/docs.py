"""Swagger UI (`/docs`) and ReDoc (`/redoc`) with their scripts and styles served by the app itself,
from the assets packaged in fastapi-offline: the pages work with no network, and load nothing from
anywhere else (their Content-Security-Policy allows only this origin)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from shop_common.errors import NotFound

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
ASSETS_URL = "/docs/assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Every path the docs answer (the gateway routes exactly these to its own app).
DOCS_PATHS = frozenset({"/docs", "/redoc", *(f"{ASSETS_URL}/{name}" for name in ASSET_FILES)})
# Swagger UI starts from an inline script and ReDoc searches in a blob: worker; everything else
# comes from this origin only.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'"
)


class DocsAssetNotFound(NotFound):
    title = "No such docs asset"


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


def docs_router(title: str, openapi_url: str = "/openapi.json") -> APIRouter:
    router = APIRouter(include_in_schema=False)
    favicon = f"{ASSETS_URL}/favicon.png"

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{title} - Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=favicon,
            )
        )

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: str) -> FileResponse:
        if name not in ASSET_FILES:  # a fixed list: no path from the request reaches the disk
            raise DocsAssetNotFound(f"no docs asset {name!r}")
        return FileResponse(ASSETS_DIR / name, headers={"Cache-Control": "public, max-age=86400"})

    return router
