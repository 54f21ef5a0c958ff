"""Start-up and shutdown: components are entered in order and exited in reverse."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from crdt_store import open_store

from .config import Settings
from .persistence import UpdateWriter
from .rooms import RoomManager
from .services import Services

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.auth_enabled:
        log.warning("JWT_SECRET is not set: the server accepts every connection without a token")
    elif len(settings.jwt_secret or "") < 32:
        log.warning("JWT_SECRET is shorter than 32 bytes: tokens signed with it are easier to forge")
    async with AsyncExitStack() as stack:
        # Exit order: rooms close their sockets, the writer flushes every accepted update, the
        # store closes its pool.
        store = await stack.enter_async_context(open_store(settings.database_url))
        writer = await stack.enter_async_context(
            UpdateWriter(
                store,
                interval=settings.persist_interval_ms / 1000,
                compact_after_updates=settings.compact_after_updates,
                compact_after_bytes=settings.compact_after_bytes,
                retry_max=settings.store_retry_max,
            )
        )
        rooms = await stack.enter_async_context(
            RoomManager(
                store,
                writer,
                unload_grace=settings.room_unload_grace,
                heartbeat_interval=settings.heartbeat_interval,
                message_queue_size=settings.message_queue_size,
            )
        )
        app.state.services = Services(settings=settings, store=store, writer=writer, rooms=rooms)
        log.info("ready on port %s (%s)", settings.port, settings.environment.value)
        yield
        log.info("shutting down: flushing %d pending updates", writer.pending)
