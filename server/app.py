"""The application factory."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from crdt_store import StoreError

from . import __version__
from .close_codes import CLOSE_1012_SERVICE_RESTART
from .config import Settings, load_settings
from .endpoints.demo import mount_demo
from .endpoints.events import event_endpoint, is_event_request
from .endpoints.handshake import refuse_unknown_endpoint
from .endpoints.sync import is_sync_request, sync_endpoint
from .errors import install_error_handlers
from .lifespan import lifespan
from .limits import BodyLimit, RestRateLimit, cors_options
from .metrics import RequestTimer
from .services import Services

log = logging.getLogger(__name__)


class CollaborationApp(FastAPI):
    """FastAPI, with the WebSocket endpoints (document sync, event channel) served as plain ASGI
    before routing: they carry almost all the traffic, and per-connection framework layers cost
    memory and time per frame."""

    async def drain(self, timeout: float) -> None:
        """Stop admitting (new upgrades get 503 ``draining``, ``/health`` says ``draining``), close
        every WebSocket with 1012 so that its client reconnects to another instance, and store
        every pending update; within ``timeout`` seconds. Runs on SIGTERM before uvicorn closes
        anything (``serving.DrainingServer``); the lifespan's exit then stores what is left."""
        services: Services | None = getattr(self.state, "services", None)
        if services is None or services.draining:
            return
        services.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        log.info("draining: refusing new connections, closing %d WebSockets with 1012", services.connections)
        while services.admission.open and loop.time() < deadline - 0.5:
            for conn in services.rooms.connections():
                conn.close(CLOSE_1012_SERVICE_RESTART)
            for ticket in list(services.admission.tickets):
                if ticket.conn is not None:
                    ticket.conn.close(CLOSE_1012_SERVICE_RESTART)
            await asyncio.sleep(0.05)
        pending = services.writer.pending
        try:
            await asyncio.wait_for(services.writer.flush(), max(0.1, deadline - loop.time()))
        except (TimeoutError, StoreError) as exc:
            log.error(
                "drain: %d updates not stored yet (%r); the shutdown keeps trying",
                services.writer.pending,
                exc,
            )
        log.info(
            "drained: %d WebSockets still open, %d of %d pending updates stored",
            services.connections,
            pending - services.writer.pending,
            pending,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, StartupFailure(self, send))
            return
        if is_sync_request(scope):
            scope["app"] = self
            await sync_endpoint(scope, receive, send)
            return
        if is_event_request(scope):
            scope["app"] = self
            await event_endpoint(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await refuse_unknown_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class StartupFailure:
    """The lifespan's ``send``, except that a start that failed for a known reason (the lifespan
    left it on ``app.state.startup_error``) is reported as that one line instead of a traceback."""

    def __init__(self, app: FastAPI, send: Send) -> None:
        self._app = app
        self._send = send

    async def __call__(self, message: Message) -> None:
        reason = getattr(self._app.state, "startup_error", None)
        if message["type"] == "lifespan.startup.failed" and reason:
            message = {**message, "message": reason}
        await self._send(message)


def is_update_upload(scope: Scope) -> bool:
    """``POST .../update``: a binary Yjs update, bounded by ``MAX_MESSAGE_SIZE`` as it is read."""
    return bool(
        scope["method"] == "POST"
        and scope["path"].startswith("/workspaces/")
        and scope["path"].endswith("/update")
    )


def create_app(settings: Settings | None = None) -> CollaborationApp:
    """Build the service. ``settings`` defaults to the environment (the only place it is read)."""
    settings = settings or load_settings()
    app = CollaborationApp(
        title="Real-time collaboration service",
        description="Yjs-compatible document sync, presence, agent monitoring and workspace events. "
        "Documents sync over the y-websocket protocol at `ws://HOST/ws/workspaces/{workspace_id}` "
        "and `ws://HOST/ws/workspaces/{workspace_id}/{doc_path}`.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are served with their assets (rest.docs), without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Outermost last: CORS (so that refusals carry its headers), the REST rate limits, body sizes.
    app.add_middleware(BodyLimit, limit=settings.max_json_body_size, exempt=is_update_upload)
    app.add_middleware(RequestTimer)
    app.add_middleware(RestRateLimit, settings=settings)
    app.add_middleware(CORSMiddleware, **cors_options(settings))

    from rest import api_router  # the one place the core mounts the REST layer

    app.include_router(api_router)
    mount_demo(app)
    return app
