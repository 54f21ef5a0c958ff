"""The application factory."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from .config import Settings, load_settings
from .errors import install_error_handlers
from .lifespan import lifespan
from .sync_endpoint import sync_endpoint


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. ``settings`` defaults to the environment (the only place it is read)."""
    settings = settings or load_settings()
    logging.getLogger().setLevel(settings.log_level)
    app = FastAPI(
        title="Real-time collaboration service",
        description="Yjs-compatible document sync, presence, agent monitoring and workspace events.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)

    from rest import api_router  # the one place the core mounts the REST layer

    app.include_router(api_router)
    app.add_api_websocket_route("/ws/workspaces/{workspace_id}", sync_endpoint)
    app.add_api_websocket_route("/ws/workspaces/{workspace_id}/{doc_path:path}", sync_endpoint)
    return app
