"""``/docs`` (Swagger UI) and ``/redoc``, served with their assets from the ``fastapi-offline``
package: the pages work without reaching any other site."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from server.errors import NotFoundError

router = APIRouter(include_in_schema=False)

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"})
STATIC = "/docs/static"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from the validator's site
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - API",
        redoc_js_url=f"{STATIC}/redoc.standalone.js",
        redoc_favicon_url=f"{STATIC}/favicon.png",
        with_google_fonts=False,
    )


@router.get(STATIC + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSET_FILES:
        raise NotFoundError(f"no documentation asset {name!r}")
    return FileResponse(ASSETS / name, headers={"Cache-Control": "public, max-age=86400"})
