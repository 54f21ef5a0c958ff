"""``/demo``: the browser demo, served from its built assets (``web_demo/dist``, committed, so
running it needs no Node). ``/demo`` and ``/demo/`` are the page; the rest are static files."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parents[2] / "web_demo" / "dist"


def mount_demo(app: FastAPI, directory: Path = DEMO_DIR) -> None:
    """Serve the demo at ``/demo`` when its build is present (an installation without the source
    tree has none; the rest of the service does not need it)."""
    page = directory / "index.html"
    if not page.is_file():
        log.info("no demo build at %s: /demo is not served", directory)
        return

    async def demo_page() -> FileResponse:
        # Revalidated on every visit, so a rebuilt demo is picked up at once.
        return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.add_api_route("/demo", demo_page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/demo", StaticFiles(directory=directory, html=True), name="demo")
