"""Start-up and shutdown: the app is assembled here, components entered in order and exited in
reverse. Every listener is given to its component's constructor here (or, for the broker, to
``running``), so this file says who hears about what."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from crdt_store import Store, StoreLocked, StoreUnavailable, describe_database, open_store

from .agent_presence import AgentPresence
from .agents import AgentService, TextLimits
from .audience import Audience
from .broker import open_broker
from .cluster import Cluster, Inbound
from .config import Settings
from .document_view import DocumentViews
from .events.hub import EventHub
from .limits import Admission, RateLimiter
from .persistence import UpdateWriter
from .presence import Presence
from .replication import Replication
from .rooms import RoomManager
from .services import Services
from .workspaces import MemberAccess, WorkspaceEvents, WorkspaceService

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    """The service cannot start; the message says why in one line (see ``app.StartupFailure``)."""


@asynccontextmanager
async def open_store_or_explain(app: FastAPI, settings: Settings) -> AsyncIterator[Store]:
    """``open_store`` with the settings' timeouts. A database still unavailable after
    ``DATABASE_STARTUP_TIMEOUT`` seconds, or a SQLite file another process holds, stops the start
    with ``StartupFailed`` and a one-line reason (kept on ``app.state.startup_error``)."""
    opened = False
    try:
        async with open_store(
            settings.database_url, timeout=settings.database_timeout, wait=settings.database_startup_timeout
        ) as store:
            opened = True
            yield store
    except StoreUnavailable as exc:
        if opened:
            raise
        app.state.startup_error = (
            f"cannot start: {describe_database(settings.database_url)} is unavailable: {exc.reason} "
            f"(gave up after DATABASE_STARTUP_TIMEOUT={settings.database_startup_timeout:g} s)"
        )
        raise StartupFailed(app.state.startup_error) from None
    except StoreLocked as exc:
        if opened:
            raise
        app.state.startup_error = f"cannot start: {exc}"
        raise StartupFailed(app.state.startup_error) from None


def _warn_about(settings: Settings) -> None:
    if settings.cors_origins is None:
        log.warning("CORS_ORIGINS is not set: browsers on any origin may call the API and open WebSockets")
    if not settings.auth_enabled:
        log.warning("JWT_SECRET is not set: the server accepts every connection without a token")
    elif len(settings.jwt_secret or "") < 32:
        log.warning("JWT_SECRET is shorter than 32 bytes: tokens signed with it are easier to forge")
    if settings.redis_url is not None and settings.database_url.startswith("sqlite"):
        log.warning("REDIS_URL is set with SQLite: instances can share Redis only on one PostgreSQL")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    _warn_about(settings)
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store_or_explain(app, settings))
        broker = open_broker(settings)
        writer = UpdateWriter(
            store,
            interval=settings.persist_interval_ms / 1000,
            compact_after_updates=settings.compact_after_updates,
            compact_after_bytes=settings.compact_after_bytes,
            retry_max=settings.store_retry_max,
            on_stored=broker.note_stored,
        )
        agent_presence = AgentPresence(
            linger=settings.agent_presence_linger, renew_interval=settings.heartbeat_interval
        )
        audience = Audience(store, settings)
        hub = EventHub(
            store,
            broker,
            audience,
            retention=settings.event_retention,
            max_batch=settings.message_queue_size // 4,  # a batch fills at most a quarter of a queue
            listeners=[agent_presence.event],
        )
        workspace_events = WorkspaceEvents(hub)
        presence = Presence(hub, broker)
        replication = Replication(broker, check_interval=settings.sync_check_interval)
        rooms = RoomManager(
            store,
            writer,
            replication=replication,
            unload_grace=settings.room_unload_grace,
            heartbeat_interval=settings.heartbeat_interval,
            message_queue_size=settings.message_queue_size,
            message_queue_bytes=settings.message_queue_bytes,
            on_room_loaded=agent_presence.room_loaded,
            on_room_unloaded=agent_presence.room_unloaded,
            on_document_created=workspace_events.document_created,
            on_enter=presence.enter,
            on_leave=presence.leave,
        )
        member_access = MemberAccess()
        cluster = Cluster(broker, rooms, hub, member_access)
        services = Services(
            settings=settings,
            store=store,
            broker=broker,
            writer=writer,
            events=hub,
            presence=presence,
            replication=replication,
            rooms=rooms,
            cluster=cluster,
            workspaces=WorkspaceService(store, settings, workspace_events, cluster, member_access),
            agents=AgentService(store, audience, TextLimits.of(settings), hub, workspace_events, cluster),
            views=DocumentViews(timeout=settings.document_view_timeout),
            limiter=RateLimiter(settings),
            admission=Admission(
                total=settings.max_connections,
                per_user=settings.max_connections_per_user,
                per_ip=settings.max_connections_per_ip,
            ),
        )
        stack.push_async_callback(services.limiter.aclose)
        # Exit order (reverse): views stop, agent presence stops, rooms close their sockets,
        # presence changes reach Redis, queued events go out, the writer flushes every accepted
        # update, the broker publishes how far this instance has stored and leaves, the store
        # closes its pool.
        await stack.enter_async_context(broker.running(Inbound(replication, hub, cluster, presence, writer)))
        await stack.enter_async_context(writer)
        await stack.enter_async_context(hub)
        stack.push_async_callback(broker.drain_presence)
        await stack.enter_async_context(replication)
        await stack.enter_async_context(rooms)
        await stack.enter_async_context(agent_presence)
        await stack.enter_async_context(services.views)
        app.state.services = services
        log.info(
            "ready on port %s (%s, instance %s, %s broker)",
            settings.port,
            settings.environment.value,
            broker.instance_id,
            broker.kind,
        )
        yield
        log.info("shutting down: flushing %d pending updates", writer.pending)
