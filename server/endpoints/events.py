"""``/ws``, ``/ws/agents`` and ``/ws/workspaces``: the JSON event channel.

Text frames ``{"type": ..., "data": {...}, "request_id"?: ...}``. Every command is acknowledged
(``ack``, echoing ``request_id``) or refused (``error`` with a code and message); invalid input
never closes the stream. ``?last_event_id=N`` (or a ``resume`` command) replays what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from .. import metrics
from ..audience import Verdict, topic_parts
from ..auth import Principal
from ..channel import AsgiChannel, ChannelClosed, FrameRejected, frame_writer
from ..close_codes import (
    CLOSE_1000_NORMAL,
    CLOSE_1011_INTERNAL_ERROR,
    CLOSE_1012_SERVICE_RESTART,
    CLOSE_4401_TOKEN_EXPIRED,
)
from ..connection import Connection
from ..errors import ServiceError, client_error_of, store_errors_as_service_errors
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
from ..limits import ConnectionRate
from ..services import Services
from ..vocabulary import iso_z, parse_json, utcnow
from .handshake import Admitted, serve_admitted

log = logging.getLogger(__name__)

ENDPOINTS = {
    "/ws": frozenset({"agent", "workspace"}),
    "/ws/agents": frozenset({"agent"}),
    "/ws/workspaces": frozenset({"workspace"}),
}
MAX_REQUEST_ID = 100


def is_event_request(scope: Scope) -> bool:
    return scope["type"] == "websocket" and scope["path"].rstrip("/") in ENDPOINTS


def _request_id_of(raw: bytes | str) -> str | None:
    """The ``request_id`` of a message, if it is a JSON object with a valid one."""
    if isinstance(raw, bytes):
        return None
    try:
        body = parse_json(raw)
    except (ValueError, RecursionError):
        return None
    request_id = body.get("request_id") if isinstance(body, dict) else None
    return request_id if isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID else None


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def utc_now() -> str:
    return iso_z(utcnow())


def event_endpoint(scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
    """The connection's coroutine (``serve_admitted``), returned rather than awaited so that it
    holds no frame of its own for the connection's lifetime."""
    return serve_admitted(scope, receive, send, _serve)


async def _serve(scope: Scope, receive: Receive, send: Send, services: Services, admitted: Admitted) -> None:
    settings = services.settings
    kinds = ENDPOINTS[scope["path"].rstrip("/")]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    await send({"type": "websocket.accept", "subprotocol": admitted.subprotocol})
    channel = AsgiChannel(
        receive,
        send,
        path=scope["path"],
        max_message_size=settings.max_event_message_size,
        frames=frame_writer(scope),
    )
    conn = Connection(
        channel,
        max_queue=settings.message_queue_size,
        max_queue_bytes=settings.message_queue_bytes,
        user=admitted.principal,
    )
    admitted.ticket.conn = conn
    session = EventSession(services, conn, admitted.principal, kinds)
    heartbeat = Heartbeat(conn, settings.heartbeat_interval)
    try:
        if services.draining:  # began before the accept was sent
            conn.close(CLOSE_1012_SERVICE_RESTART)
        else:
            with metrics.connection_span(scope["path"].rstrip("/"), conn, admitted.principal.user_id):
                await session.run(query.get("last_event_id", [None])[0])
    finally:
        heartbeat.stop()
        session.close()
        conn.close(CLOSE_1000_NORMAL)
        await conn.closed()


class Heartbeat:
    """The event channel's own heartbeat: a ``ping`` message whenever nothing was sent for
    ``interval`` seconds, so a client sees the server is there (a browser cannot see WebSocket
    pings). A peer that answers nothing at all, not even the protocol's pings, is closed by the
    transport within two intervals (1011 ``keepalive ping timeout``). A timer, not a task."""

    __slots__ = ("_conn", "_handle", "_interval", "_loop")

    def __init__(self, conn: Connection, interval: float) -> None:
        self._conn = conn
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(interval, self._beat)

    def _beat(self) -> None:
        if self._conn.is_closing:
            self._handle = None
            return
        due = self._conn.last_sent + self._interval
        if self._loop.time() >= due - 0.01:
            self._conn.send(frame("ping", {"server_time": utc_now()}))
            due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(due, self._beat)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


Handler = Callable[[Any], Awaitable[dict[str, Any] | None]]


class EventSession:
    """One event-channel connection: its subscriptions, joined workspaces and command handling."""

    def __init__(self, services: Services, conn: Connection, user: Principal, kinds: frozenset[str]) -> None:
        self.services = services
        self.conn = conn
        self.user = user
        self.sub = Subscriber(conn, user, kinds, on_topic_lost=self._topic_lost)
        self.joined: set[str] = set()
        settings = services.settings
        self.rate = (
            ConnectionRate(
                messages=settings.rate_limit_event_messages,
                size=settings.rate_limit_event_bytes,
                close_after=settings.rate_limit_close_after,
                transport="events",
            )
            if settings.rate_limit_event_messages or settings.rate_limit_event_bytes
            else None
        )
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
            if self.rate is not None and not await self._within_rate(raw):
                continue
            try:
                await self.handle(raw)
            except Exception:
                log.exception("event connection %s: failed to handle a message", self.conn.id)
                self.conn.close(CLOSE_1011_INTERNAL_ERROR)
                return

    async def _within_rate(self, raw: bytes | str) -> bool:
        """Whether the message is within the connection's rate. One that is not is answered with
        ``error`` ``rate_limited`` (with ``retry_after``) and not handled, and nothing more is
        read until the allowance is back (so a flood costs no more than the rate, and its replies
        do not pile up); a client that stays over its rate for ``RATE_LIMIT_CLOSE_AFTER`` seconds
        is closed with 4429."""
        assert self.rate is not None
        wait = self.rate.try_take(len(raw))
        if wait == 0:
            return True
        if self.rate.persisting:
            self.conn.close(self.rate.closing())
            return False
        self.error(
            "rate_limited",
            f"too many messages: at most {self.rate.description}; this one was not handled",
            _request_id_of(raw),
            retry_after=round(wait, 3),
        )
        await asyncio.sleep(wait)
        return False

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
            details = {"details": exc.details} if isinstance(exc, ServiceError) and exc.details else {}
            self.error(exc.code, exc.message, request_id, **details)
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
        if body["type"] == "pong":  # a client's answer to the heartbeat: nothing to reply
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
        self.services.events.subscribe(self.sub, workspace_topic(workspace_id), Verdict(True, workspace_id))
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

    def _topic_lost(self, topic: str) -> None:
        """The user may no longer read a workspace this connection joined: it is left."""
        workspace_id = topic_parts(topic)[1]
        if workspace_id in self.joined:
            self.joined.discard(workspace_id)
            self.services.presence.leave(workspace_id, self.user)
        self.error(
            "access_revoked",
            f"you may no longer read workspace {workspace_id!r}; it was left",
            workspace_id=workspace_id,
        )

    async def _report(
        self, message: AgentExecutionStart | AgentExecutionUpdate | AgentExecutionComplete
    ) -> None:
        """Queue the event; its ``ack`` (with the event's id) follows once it is stored, while
        this connection's next messages are already read (acks keep the order of the events)."""
        stored = await self.services.agents.submit(self.user, message)
        agent_id, request_id = message.data.agent_id, message.request_id

        def answer(done: asyncio.Future[int]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:
                data = {"command": message.type, "agent_id": agent_id, "event_id": done.result()}
                self.send("ack", data, request_id)
                return
            failure = client_error_of(error)
            if failure is None:
                log.error("event connection %s: storing an event failed", self.conn.id, exc_info=error)
                self.error("internal_error", "the event could not be stored", request_id)
            else:
                self.error(failure.code, failure.message, request_id)

        stored.add_done_callback(answer)

    async def resume(self, last_event_id: int) -> int:
        async def current_agents() -> dict[str, Any]:
            agent_ids = [
                agent_id for topic in self.sub.topics if (agent_id := agent_id_of(topic)) is not None
            ]
            return ResyncRequired(
                reason="events after last_event_id are older than retention",
                last_event_id=last_event_id,
                agents=await self.services.agents.states(self.user, agent_ids),
            ).model_dump()

        return await self.services.events.resume(self.sub, last_event_id, on_gap=current_agents)
