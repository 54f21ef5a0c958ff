"""The event channel as Server-Sent Events (``GET /events``), for clients without a WebSocket
library: ``curl``, a browser's ``EventSource``, an editor extension.

The format is the WHATWG HTML standard's ``text/event-stream`` (section 9.2): each message is one
``data:`` line holding the same JSON text ``/ws`` sends (``{"id", "type", "data"}`` for events,
``{"type": "welcome" | "resync_required", "data"}`` otherwise), preceded by an ``id:`` line for
events, so a reconnecting ``EventSource`` sends the last one back as ``Last-Event-ID`` and resumes
where it stopped. No ``event:`` field is set, so ``onmessage`` receives everything. A comment
line (``: ping``) every ``HEARTBEAT_INTERVAL`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.audience import agent_topic, topic_parts
from server.auth import Principal
from server.close_codes import CLOSE_1000_NORMAL, CLOSE_4401_TOKEN_EXPIRED, CloseCode
from server.connection import Connection
from server.events.hub import Subscriber, frame
from server.events.models import ResyncRequired, Welcome
from server.limits import Ticket
from server.services import Services
from server.vocabulary import iso_z, utcnow
from server.ws_frames import Framed

log = logging.getLogger(__name__)

HEARTBEAT = ": ping\n\n"
_EVENT_ID = re.compile(r'\{"id":(\d+),')


class SseChannel:
    """A ``text/event-stream`` response body as the ``Channel`` a ``Connection`` writes to."""

    __slots__ = ("_open", "_send", "path")

    def __init__(self, send: Send, *, path: str) -> None:
        self.path = path
        self._send = send
        self._open = True

    async def recv(self) -> bytes:  # pragma: no cover - nothing is read from an SSE client
        raise NotImplementedError

    async def send(self, data: bytes | str | Framed) -> None:
        if isinstance(data, Framed):  # each message its own event
            for message in data.messages:
                await self.send(message)
            return
        text = data.decode() if isinstance(data, bytes) else data
        if not text.startswith(":"):
            match = _EVENT_ID.match(text)
            text = (f"id: {match.group(1)}\n" if match else "") + f"data: {text}\n\n"
        try:
            await self._send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        except OSError:
            self._open = False
            raise

    async def close(self, close: CloseCode) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(OSError):
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        log.debug("event stream closed (%s)", close.reason or close.code)


class EventStreamResponse(Response):
    """The response class of ``GET /events`` in the OpenAPI document."""

    media_type = "text/event-stream"


class EventStream(EventStreamResponse):
    """An ASGI response streaming the events of ``topics`` (and of the user's stored agent
    subscriptions) that ``principal`` may see, after those following ``last_event_id``.

    Arguments:
        services: the application's services.
        principal: whose rights decide what is sent.
        topics: ``agent:{id}`` and ``workspace:{id}`` topics, already checked.
        last_event_id: resume after this id (from ``Last-Event-ID``), or None.
        ticket: the connection's admitted place, released when the stream ends.
    """

    def __init__(
        self,
        services: Services,
        principal: Principal,
        topics: Iterable[str],
        last_event_id: int | None,
        ticket: Ticket,
    ) -> None:
        super().__init__(media_type=self.media_type)
        self.services = services
        self.principal = principal
        self.topics = set(topics)
        self.last_event_id = last_event_id
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        settings = services.settings
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # nginx: pass events on as they come
                ],
            }
        )
        conn = Connection(
            SseChannel(send, path=scope["path"]),
            max_queue=settings.message_queue_size,
            max_queue_bytes=settings.message_queue_bytes,
            user=self.principal,
        )

        def lost(topic: str) -> None:
            workspace_id = topic_parts(topic)[1]
            message = f"you may no longer read workspace {workspace_id!r}; it was left"
            conn.send(
                frame("error", {"code": "access_revoked", "message": message, "workspace_id": workspace_id})
            )

        sub = Subscriber(conn, self.principal, frozenset({"agent", "workspace"}), on_topic_lost=lost)
        hub = services.events
        closed = asyncio.create_task(conn.closed(), name=f"sse-closed-{conn.id}")
        heartbeat = asyncio.create_task(self._heartbeat(conn, settings.heartbeat_interval))
        self.ticket.conn = conn  # a drain closes it
        try:
            hub.add(sub)
            conn.close_at(self.principal.expires_at, CLOSE_4401_TOKEN_EXPIRED)
            for agent_id in await services.agents.subscriptions(self.principal):
                self.topics.add(agent_topic(agent_id))
            for topic in self.topics:
                hub.subscribe(sub, topic)
            conn.send(frame("welcome", self._welcome(scope["path"])))  # subscribed from here on
            if self.last_event_id is not None:
                await hub.resume(sub, self.last_event_id, on_gap=lambda: self._resync(sub))
            await self._until_disconnected(receive, closed)
        finally:
            hub.remove(sub)
            conn.close_at(None)
            conn.close(CLOSE_1000_NORMAL)
            heartbeat.cancel()
            await asyncio.gather(closed, heartbeat, return_exceptions=True)
            self.ticket.release()

    def _welcome(self, path: str) -> dict[str, Any]:
        return Welcome(
            connection_id=f"c-{uuid.uuid4().hex[:12]}",
            user_id=self.principal.user_id,
            username=self.principal.name,
            endpoint=path,
            heartbeat_interval=self.services.settings.heartbeat_interval,
            server_time=iso_z(utcnow()),
        ).model_dump()

    async def _resync(self, sub: Subscriber) -> dict[str, Any]:
        agent_ids = [name for kind, name in map(topic_parts, sub.topics) if kind == "agent"]
        return ResyncRequired(
            reason="events after last_event_id are older than retention",
            last_event_id=self.last_event_id or 0,
            agents=await self.services.agents.states(self.principal, agent_ids),
        ).model_dump()

    @staticmethod
    async def _heartbeat(conn: Connection, interval: float) -> None:
        while not conn.is_closing:
            await asyncio.sleep(interval)
            conn.send(HEARTBEAT)

    @staticmethod
    async def _until_disconnected(receive: Receive, closed: asyncio.Task[None]) -> None:
        """Wait for the client to go away, or the connection to end (``closed``: the connection's
        ``closed()``, as when a token expires or the client stops reading)."""
        while True:
            reading = asyncio.ensure_future(receive())
            await asyncio.wait({reading, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                reading.cancel()
                return
            if reading.result()["type"] == "http.disconnect":
                return
