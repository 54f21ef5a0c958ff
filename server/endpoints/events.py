"""``/ws``, ``/ws/agents`` and ``/ws/workspaces``: the JSON event channel.

Text frames ``{"type": ..., "data": {...}, "request_id"?: ...}``. Every command is acknowledged
(``ack``, echoing ``request_id``) or refused (``error`` with a code and message); invalid input
never closes the stream. ``?last_event_id=N`` (or a ``resume`` command) replays what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from .. import metrics
from ..auth import Principal
from ..channel import AsgiChannel, ChannelClosed, FrameRejected
from ..close_codes import CLOSE_1000_NORMAL, CLOSE_1011_INTERNAL_ERROR, CLOSE_4401_TOKEN_EXPIRED
from ..connection import Connection
from ..errors import ServiceError, store_errors_as_service_errors
from ..events.hub import Subscriber, agent_id_of, agent_topic, frame, workspace_topic
from ..events.models import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
    MAX_EVENT_ID,
    AgentExecutionComplete,
    AgentExecutionStart,
    AgentExecutionUpdate,
    ClientCommand,
    ErrorData,
    JoinWorkspace,
    LeaveWorkspace,
    Ping,
    Resume,
    ResyncRequired,
    SubscribeAgent,
    UnsubscribeAgent,
    Welcome,
    event_id_param,
)
from ..services import Services
from ..vocabulary import iso_z, parse_json, utcnow
from .handshake import admit

log = logging.getLogger(__name__)

ENDPOINTS = {
    "/ws": frozenset({"agent", "workspace"}),
    "/ws/agents": frozenset({"agent"}),
    "/ws/workspaces": frozenset({"workspace"}),
}
MAX_REQUEST_ID = 100


def is_event_request(scope: Scope) -> bool:
    return scope["type"] == "websocket" and scope["path"].rstrip("/") in ENDPOINTS


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def utc_now() -> str:
    return iso_z(utcnow())


async def event_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    services: Services = scope["app"].state.services
    settings = services.settings
    kinds = ENDPOINTS[scope["path"].rstrip("/")]
    admitted = await admit(scope, receive, send, services)
    if admitted is None:
        return
    principal, subprotocol = admitted
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    services.connections += 1
    channel = AsgiChannel(receive, send, path=scope["path"], max_message_size=settings.max_event_message_size)
    conn = Connection(channel, max_queue=settings.message_queue_size, user=principal)
    session = EventSession(services, Subscriber(conn, principal, kinds))
    writer = asyncio.create_task(conn.run_writer(), name=f"events-writer-{conn.id}")
    with metrics.connection_span(scope["path"].rstrip("/"), conn, principal.user_id):
        try:
            await session.run(query.get("last_event_id", [None])[0])
        finally:
            session.close()
            conn.close(CLOSE_1000_NORMAL)
            await writer
            services.connections -= 1


Handler = Callable[[Any], Awaitable[dict[str, Any] | None]]


class EventSession:
    """One event-channel connection: its subscriptions, joined workspaces and command handling."""

    def __init__(self, services: Services, sub: Subscriber) -> None:
        self.services = services
        self.sub = sub
        self.conn = sub.conn
        self.user: Principal = sub.user
        self.joined: set[str] = set()
        self._handlers: dict[type[BaseModel], tuple[str | None, Handler]] = {
            Ping: (None, self._ping),
            Resume: (None, self._resume),
            SubscribeAgent: ("agent", self._subscribe_agent),
            UnsubscribeAgent: ("agent", self._unsubscribe_agent),
            JoinWorkspace: ("workspace", self._join_workspace),
            LeaveWorkspace: ("workspace", self._leave_workspace),
            AgentExecutionStart: ("agent", self._report),
            AgentExecutionUpdate: ("agent", self._report),
            AgentExecutionComplete: ("agent", self._report),
        }

    async def run(self, last_event_id: str | None) -> None:
        hub = self.services.events
        hub.add(self.sub)
        self.conn.close_at(self.user.expires_at, CLOSE_4401_TOKEN_EXPIRED)
        welcome = Welcome(
            connection_id=f"c-{uuid.uuid4().hex[:12]}",
            user_id=self.user.user_id,
            username=self.user.name,
            endpoint=self.conn.channel.path,
            heartbeat_interval=self.services.settings.heartbeat_interval,
            server_time=utc_now(),
        )
        self.send("welcome", welcome.model_dump())
        if "agent" in self.sub.kinds:
            for agent_id in await self.services.agents.subscriptions(self.user):
                hub.subscribe(self.sub, agent_topic(agent_id))
        if last_event_id is not None:
            after = event_id_param(last_event_id)
            if after is None:
                self.error("bad_request", f"last_event_id must be an integer from 0 to {MAX_EVENT_ID}")
            else:
                await self.resume(after)
        await self._read()

    async def _read(self) -> None:
        channel = self.conn.channel
        assert isinstance(channel, AsgiChannel)
        while not self.conn.is_closing:
            try:
                raw = await channel.recv_any()
            except ChannelClosed:
                return
            except FrameRejected as exc:
                self.conn.close(exc.close)
                return
            try:
                await self.handle(raw)
            except Exception:
                log.exception("event connection %s: failed to handle a message", self.conn.id)
                self.conn.close(CLOSE_1011_INTERNAL_ERROR)
                return

    def close(self) -> None:
        self.conn.close_at(None)
        self.services.events.remove(self.sub)
        for workspace_id in self.joined:
            self.services.presence.leave(workspace_id, self.user)
        self.joined.clear()

    # -- replies ----------------------------------------------------------------------------------

    def send(self, message_type: str, data: Any, request_id: str | None = None) -> None:
        extra = {"request_id": request_id} if request_id is not None else {}
        self.conn.send(frame(message_type, data, **extra))

    def error(self, code: str, message: str, request_id: str | None = None, **details: Any) -> None:
        metrics.error_sent("events", code)
        self.send(
            "error",
            ErrorData(code=code, message=message, **details).model_dump(exclude_none=True),
            request_id,
        )

    # -- commands ---------------------------------------------------------------------------------

    async def handle(self, raw: bytes | str) -> None:
        message = self._parse(raw)
        if message is None:
            return
        request_id = message.request_id
        required, handler = self._handlers[type(message)]
        try:
            if required is not None and required not in self.sub.kinds:
                other = "/ws/agents" if required == "agent" else "/ws/workspaces"
                raise CommandError("unsupported_on_endpoint", f"use /ws or {other} for {required} messages")
            with store_errors_as_service_errors():
                result = await handler(message)
        except (CommandError, ServiceError) as exc:
            self.error(exc.code, exc.message, request_id)
        else:
            if result is not None:
                self.send("ack", {"command": message.type, **result}, request_id)

    def _parse(self, raw: bytes | str) -> ClientCommand | None:
        """The message, validated; or None once an ``error`` has said what is wrong with it."""
        if isinstance(raw, bytes):
            self.error(
                "unsupported_frame", "binary frames are not part of the event protocol; send JSON text"
            )
            return None
        try:
            body = parse_json(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            self.error("invalid_json", f"not valid JSON: {str(exc)[:200]}")
            return None
        request_id = body.get("request_id") if isinstance(body, dict) else None
        request_id = request_id if isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID else None
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            self.error(
                "invalid_message", 'a message is a JSON object {"type": ..., "data": {...}}', request_id
            )
            return None
        if body["type"] not in CLIENT_TYPES:
            message = f"unknown message type {body['type'][:64]!r}"
            self.error("unknown_type", message, request_id, known_types=list(CLIENT_TYPES))
            return None
        try:
            return CLIENT_MESSAGE.validate_python(body)
        except ValidationError as exc:
            details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
            self.error("validation_failed", f"invalid {body['type']} message", request_id, details=details)
            return None

    async def _ping(self, message: Ping) -> None:
        self.send("pong", {**message.data, "server_time": utc_now()}, message.request_id)

    async def _resume(self, message: Resume) -> dict[str, Any]:
        replayed = await self.resume(message.data.last_event_id)
        return {"last_event_id": self.sub.last_id, "replayed": replayed}

    async def _subscribe_agent(self, message: SubscribeAgent) -> dict[str, Any]:
        agent_id = message.data.agent_id
        await self.services.agents.may_watch(self.user, agent_id)
        self.services.events.subscribe(self.sub, agent_topic(agent_id))
        return {"agent_id": agent_id}

    async def _unsubscribe_agent(self, message: UnsubscribeAgent) -> dict[str, Any]:
        self.services.events.unsubscribe(self.sub, agent_topic(message.data.agent_id))
        return {"agent_id": message.data.agent_id}

    async def _join_workspace(self, message: JoinWorkspace) -> dict[str, Any]:
        workspace_id = message.data.workspace_id
        await self.services.workspaces.open(self.user, workspace_id)
        self.services.events.subscribe(self.sub, workspace_topic(workspace_id))
        if workspace_id not in self.joined:
            self.joined.add(workspace_id)
            self.services.presence.enter(workspace_id, self.user)
        return {"workspace_id": workspace_id}

    async def _leave_workspace(self, message: LeaveWorkspace) -> dict[str, Any]:
        workspace_id = message.data.workspace_id
        self.services.events.unsubscribe(self.sub, workspace_topic(workspace_id))
        if workspace_id in self.joined:
            self.joined.discard(workspace_id)
            self.services.presence.leave(workspace_id, self.user)
        return {"workspace_id": workspace_id}

    async def _report(
        self, message: AgentExecutionStart | AgentExecutionUpdate | AgentExecutionComplete
    ) -> dict[str, Any]:
        event_id = await self.services.agents.report(self.user, message)
        return {"agent_id": message.data.agent_id, "event_id": event_id}

    async def resume(self, last_event_id: int) -> int:
        async def current_agents() -> dict[str, Any]:
            agent_ids = [
                agent_id for topic in self.sub.topics if (agent_id := agent_id_of(topic)) is not None
            ]
            return ResyncRequired(
                reason="events after last_event_id are older than retention",
                last_event_id=last_event_id,
                agents=await self.services.agents.states(agent_ids),
            ).model_dump()

        return await self.services.events.resume(self.sub, last_event_id, on_gap=current_agents)
