"""Prometheus metrics: every metric of the service, defined once, and ``GET /metrics``.

Names follow Prometheus conventions: the ``collab_`` prefix, base units in the name (``_seconds``,
``_bytes``), counters ending in ``_total``. Metrics live in the process's default registry, so a
process serves one set (one app per process in production). Values that are a count of what is
loaded now (rooms, users online, pending updates) are read from the app's components when
``/metrics`` is scraped (``refresh``), so they are right whatever path changed them.

Where each one is counted:

- ``collab_websocket_connections{endpoint}``: ``refresh``;
  ``collab_websocket_connections_opened_total{endpoint}``,
  ``collab_websocket_connections_closed_total{endpoint,code}``: ``connection_span`` (the sync and
  event endpoints);
- ``collab_messages_total{direction,kind}``, ``collab_message_bytes_total{direction}``:
  ``message_in``/``message_out``, called by ``channel.AsgiChannel`` for every frame, added to the
  counters at each scrape (``publish_message_counts``);
- ``collab_agent_executions_total{status}``: ``agents.AgentService.report``, each time an execution
  enters a status;
- ``collab_rooms_loaded``, ``collab_users_online``, ``collab_pending_updates``: ``refresh``;
- ``collab_errors_total{transport,code}``: every error code sent to a client (``error_sent``);
- ``collab_http_request_duration_seconds{method,route,status}``: ``RequestTimer`` (REST);
- ``collab_fanout_latency_seconds``: from an update's acceptance until it is queued to every
  other connection of its room on this instance (``room.Room`` calls ``fanned_out`` once per turn
  for the updates it relayed; added to the histogram at each scrape);
- ``collab_group_commit_batch_updates``, ``collab_group_commit_delay_seconds``: each group commit
  (``persistence.UpdateWriter``): updates per transaction, and the time from the first update of
  the batch being accepted to the commit;
- ``collab_compactions_total{result}``: each compaction of a document's update log;
- ``collab_event_replay_events``: events replayed by each ``resume`` (``events.hub``);
- ``collab_rate_limited_total{limit,transport}``: ``rate_limited``;
- ``collab_redis_errors_total``, ``collab_database_errors_total{operation}``: failed Redis calls
  (``broker.link``), failed database calls (``persistence``, ``errors.service_error_of``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .protocol import KEEPALIVE
from .ws_frames import Framed

if TYPE_CHECKING:
    from .connection import Connection
    from .services import Services

log = logging.getLogger("server.connections")

# -- connections ------------------------------------------------------------------------------------

CONNECTIONS = Gauge(
    "collab_websocket_connections",
    "Open WebSocket connections, by endpoint (sync: documents; /ws, /ws/agents, /ws/workspaces: events)",
    ["endpoint"],
)
CONNECTIONS_OPENED = Counter(
    "collab_websocket_connections_opened_total", "WebSocket connections accepted, by endpoint", ["endpoint"]
)
CONNECTIONS_CLOSED = Counter(
    "collab_websocket_connections_closed_total",
    "WebSocket connections closed, by endpoint and the close code the server chose",
    ["endpoint", "code"],
)

# -- messages -----------------------------------------------------------------------------------------

MESSAGES = Counter(
    "collab_messages_total",
    "WebSocket frames, by direction (in, out) and kind (sync_step1, sync_step2, sync_update, "
    "awareness, auth, query_awareness, keepalive, other for binary frames; event for JSON text frames)",
    ["direction", "kind"],
)
MESSAGE_BYTES = Counter(
    "collab_message_bytes_total", "WebSocket payload bytes, by direction (in, out)", ["direction"]
)

# -- agents, workspaces, errors ---------------------------------------------------------------------------

AGENT_EXECUTIONS = Counter(
    "collab_agent_executions_total",
    "Agent executions entering a status (queued, running, completed, failed, cancelled)",
    ["status"],
)
ROOMS_LOADED = Gauge("collab_rooms_loaded", "Documents loaded in memory on this instance")
USERS_ONLINE = Gauge(
    "collab_users_online", "Distinct (workspace, user) pairs connected to this instance (documents or events)"
)
PENDING_UPDATES = Gauge("collab_pending_updates", "Document updates accepted but not yet stored")
ERRORS = Counter(
    "collab_errors_total",
    "Errors sent to clients, by transport (rest, websocket, events) and error code",
    ["transport", "code"],
)
RATE_LIMITED = Counter(
    "collab_rate_limited_total",
    "Requests, connections or messages refused by a rate limit, by limit and transport",
    ["limit", "transport"],
)
REDIS_ERRORS = Counter("collab_redis_errors_total", "Failed Redis calls")
DATABASE_ERRORS = Counter(
    "collab_database_errors_total",
    "Failed database calls, by operation (store_updates: a group commit; request: a REST or WebSocket "
    "request answered with database_unavailable)",
    ["operation"],
)

# -- latency and sizes ----------------------------------------------------------------------------------

HTTP_DURATION = Histogram(
    "collab_http_request_duration_seconds",
    "REST response time, from the request to the end of the response body, by method, route and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FANOUT_LATENCY = Histogram(
    "collab_fanout_latency_seconds",
    "Time from a document update's acceptance until it is queued to every other local connection",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
GROUP_COMMIT_BATCH = Histogram(
    "collab_group_commit_batch_updates",
    "Document updates written per group-commit transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
GROUP_COMMIT_DELAY = Histogram(
    "collab_group_commit_delay_seconds",
    "Time from the first update of a batch being accepted until the batch is stored",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMPACTIONS = Counter(
    "collab_compactions_total", "Compactions of a document's update log, by result (ok, failed)", ["result"]
)
REPLAY_EVENTS = Histogram(
    "collab_event_replay_events",
    "Events replayed to a client by one resume (last_event_id)",
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
)


# -- counting helpers -------------------------------------------------------------------------------------


def rate_limited(limit: str, transport: str) -> None:
    """Count one refusal by the rate limit ``limit`` (its name, such as ``"connections_per_ip"``)
    on ``transport`` (``"rest"``, ``"websocket"`` or ``"events"``)."""
    RATE_LIMITED.labels(limit=limit, transport=transport).inc()


def error_sent(transport: str, code: str) -> None:
    """Count one error sent to a client: ``transport`` is ``rest``, ``websocket`` (a refused
    upgrade) or ``events`` (an ``error`` message); ``code`` the error code it carried."""
    ERRORS.labels(transport=transport, code=code).inc()


# The y-websocket message type (first byte) and, for sync messages, the step (second byte).
_SYNC_KINDS = {0: "sync_step1", 1: "sync_step2", 2: "sync_update"}
_KINDS = {1: "awareness", 2: "auth", 3: "query_awareness"}


def _frame_kind(data: bytes | str) -> str:
    if isinstance(data, str):
        return "event"
    if not data:
        return "other"
    if data[0] == 0:
        return _SYNC_KINDS.get(data[1], "other") if len(data) > 1 else "other"
    if data == KEEPALIVE:
        return "keepalive"
    return _KINDS.get(data[0], "other")


_ALL_KINDS = (*_SYNC_KINDS.values(), *_KINDS.values(), "keepalive", "event", "other")
_COUNTERS = {
    direction: {kind: MESSAGES.labels(direction, kind) for kind in _ALL_KINDS} for direction in ("in", "out")
}  # every series exists (at 0) from the start

# Messages are counted in plain integers (on the event loop's thread, where every frame passes)
# and added to the Prometheus counters when ``/metrics`` is scraped (``publish_message_counts``):
# a Prometheus counter takes a lock on every increment, which for every frame in and every
# receiver's frame out was a measurable share of the relay's time.
_counted_in = dict.fromkeys(_ALL_KINDS, 0)
_counted_out = dict.fromkeys(_ALL_KINDS, 0)
_counted_bytes = {"in": 0, "out": 0}


def message_in(data: bytes | str) -> None:
    """Count a frame received from a client."""
    _counted_in[_frame_kind(data)] += 1
    _counted_bytes["in"] += len(data)


def message_out(data: bytes | str | Framed) -> None:
    """Count a frame sent to a client (each of ``Framed``'s messages, by the first one's kind:
    they are the updates of one relay)."""
    if isinstance(data, Framed):
        _counted_out[_frame_kind(data.messages[0])] += len(data.messages)
        _counted_bytes["out"] += data.payload_bytes
        return
    _counted_out[_frame_kind(data)] += 1
    _counted_bytes["out"] += len(data)


def publish_message_counts() -> None:
    """Add the messages counted since the last call to ``collab_messages_total`` and
    ``collab_message_bytes_total``."""
    for direction, counted in (("in", _counted_in), ("out", _counted_out)):
        for kind, count in counted.items():
            if count:
                counted[kind] = 0
                _COUNTERS[direction][kind].inc(count)
    for direction, size in _counted_bytes.items():
        _counted_bytes[direction] = 0
        MESSAGE_BYTES.labels(direction).inc(size)


_fanout_waiting: list[float] = []  # fan-out latencies (seconds) not yet in the histogram
FANOUT_BATCH = 4096  # observed at a scrape, or once this many wait


def fanned_out(accepted_at: list[float]) -> None:
    """Updates accepted at ``accepted_at`` (``time.perf_counter()`` seconds) are now queued to every
    other local connection. Kept in a list and added to ``collab_fanout_latency_seconds`` at the
    next scrape, or once ``FANOUT_BATCH`` wait (a histogram takes a lock per observation)."""
    now = time.perf_counter()
    _fanout_waiting.extend([now - at for at in accepted_at])
    if len(_fanout_waiting) >= FANOUT_BATCH:
        publish_fanout_latencies()


def publish_fanout_latencies() -> None:
    """Add the fan-out latencies waiting to ``collab_fanout_latency_seconds``."""
    waiting = _fanout_waiting[:]
    _fanout_waiting.clear()
    for latency in waiting:
        FANOUT_LATENCY.observe(latency)


_children: dict[tuple[Any, ...], Any] = {}


def _labelled(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, looked up once (``labels`` takes a lock and builds its key at
    every call: once per connection, a visible share of a join's time)."""
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


class connection_span:
    """An accepted WebSocket connection, from accept to close: the connection gauges, and one log
    line as it opens and one as it closes, with the connection id, the endpoint (``sync`` for a
    document, with the document as ``workspace/path``), the user, and at the close the duration
    in seconds and the close code the server chose. (A class rather than a generator: it lives as
    long as the connection, and a suspended generator frame holds several times its size.)"""

    __slots__ = ("conn", "endpoint", "started", "user_id", "where")

    def __init__(self, endpoint: str, conn: Connection, user_id: str, document: str = "") -> None:
        self.endpoint = endpoint
        self.conn = conn
        self.user_id = user_id
        self.where = f" {document}" if document else ""
        self.started = 0.0

    def __enter__(self) -> None:
        _labelled(CONNECTIONS_OPENED, self.endpoint).inc()
        log.info(
            "WebSocket connection %s opened: %s%s user=%s",
            self.conn.id,
            self.endpoint,
            self.where,
            self.user_id,
        )
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        conn = self.conn
        code = conn.close_code.code if conn.close_code is not None else None
        _labelled(CONNECTIONS_CLOSED, self.endpoint, str(code)).inc()
        log.info(
            "WebSocket connection %s closed: %s%s user=%s duration=%.1fs code=%s",
            conn.id,
            self.endpoint,
            self.where,
            self.user_id,
            time.monotonic() - self.started,
            code,
        )


# -- REST ------------------------------------------------------------------------------------------------


class RequestTimer:
    """ASGI middleware: the REST latency histogram, labelled by the route's template (not the
    raw path, which would make a series per id) and the response status. WebSocket traffic
    passes untimed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_DURATION.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


ENDPOINTS = ("sync", "/ws", "/ws/agents", "/ws/workspaces")


def connections_by_endpoint(services: Services) -> dict[str, int]:
    """Open WebSocket connections of this instance: ``sync`` (documents) and each event endpoint."""
    counts = dict.fromkeys(ENDPOINTS, 0)
    counts["sync"] = sum(len(room.connections) for room in services.rooms.rooms.values())
    counts.update(services.events.endpoints())
    return counts


def refresh(services: Services) -> None:
    """Set the gauges that count what is open or loaded now from the app's components."""
    for endpoint, count in connections_by_endpoint(services).items():
        CONNECTIONS.labels(endpoint).set(count)
    ROOMS_LOADED.set(len(services.rooms.rooms))
    USERS_ONLINE.set(services.presence.online_here())
    PENDING_UPDATES.set(services.writer.pending)


def exposition(services: Services | None) -> tuple[bytes, str]:
    """The ``/metrics`` body (the Prometheus text exposition format) and its content type."""
    if services is not None:
        refresh(services)
    publish_message_counts()
    publish_fanout_latencies()
    return generate_latest(), CONTENT_TYPE_LATEST
