"""The WebSocket protocol the server runs under uvicorn: uvicorn's ``websockets-sansio`` protocol, with
its own opening handshake (from the request httptools parsed: ``CollabWebSocketProtocol.upgrade``)
a frame layer of its own once it is answered (``ws_frames.ServerFrames``, in place of
``websockets.ServerProtocol``) and a direct path for data frames.

Sending a frame through ASGI costs a message dict, a coroutine, the ``websockets`` frame machinery
and its output buffer, for every frame and every receiver. Server frames are unmasked, so a data
frame (binary, or text: the JSON event channel's messages) is a two-to-ten-byte header and the
payload: ``FrameWriter`` (offered to the application in ``scope["extensions"]["collab.frames"]``)
writes the frames of one turn of the event loop in one transport write at the end of the turn
(while the loop is busy writing, at the end of the current millisecond: ``Flushes``).
The 101 answering the upgrade goes out with them: a joining client's 101 and its room's sync step 1
are one system call, not two. Everything else (pings, close) goes the ordinary way, through the same
transport, in order: whatever is written or closed that way first writes what the frame writer holds.

Received frames are queued for the application as uvicorn does, but reading from the socket pauses
only when ``READ_QUEUE_FRAMES`` frames wait or a large one (``READ_QUEUE_LARGE`` bytes) arrives, not
after every frame (each pause and resume is a system call). What one read brings (up to 256 KiB:
tens of thousands of small frames, or of pings, which are answered without reaching the queue) is
parsed ``PARSE_BYTES`` at a time until ``TURN_FRAMES`` frames came out of it in this turn of the
event loop; the rest waits for a later turn, with reading paused meanwhile, and parsing waits while
the queue is full, until the application has taken what is queued. Parsing a whole read at
once would hold the event loop (and every other connection) for as long as one client's burst
takes to parse. Nor is a connection read while its send buffer is over the transport's high-water
mark: a client that sends (pings, requests) without reading the answers cannot pile them up in the
server's memory.

An idle connection holds as little as uvicorn's protocol allows: the received-message queue and the
"transport writable" flag are ``Inbox`` and ``Gate`` (an ``asyncio.Queue`` is three deques and an
event, about 3 KB; an ``asyncio.Event`` another 0.8 KB), the protocol's attributes are slots, and
once the handshake is answered the scope's header list, read only while the upgrade is admitted, is
let go.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import logging
import random
import struct
import weakref
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar, cast
from urllib.parse import unquote

import httptools
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent, WebSocketAcceptEvent, WebSocketScope
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.protocol import OPEN

from .errors import error_response
from .lingering import LingeringTransport
from .timers import time_at_timer
from .ws_frames import Framed, ServerFrames, binary_frame

FRAMES_EXTENSION = "collab.frames"
READ_QUEUE_FRAMES = 32
READ_QUEUE_LARGE = 64 * 1024  # so a paused application holds at most 2 MiB of small frames, or one large
PARSE_BYTES = 4 * 1024  # received bytes parsed at a time: at most some hundreds of frames
TURN_FRAMES = 64  # frames parsed in one turn of the loop, give or take one part of PARSE_BYTES


T = TypeVar("T")


class Inbox(Generic[T]):
    """The part of ``asyncio.Queue`` uvicorn's WebSocket protocol uses (``put_nowait``, ``get``,
    ``qsize``, ``empty``), unbounded, for one reader at a time: its ASGI ``receive``, which waits
    on ``wait()`` and takes with ``get_nowait()`` so that no coroutine of the queue's own sits in
    every connection's chain of suspended coroutines."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[T | None] = []
        self._head = 0  # items before it were taken
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """A future done once an item is put. RuntimeError if another reader is waiting."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            raise RuntimeError("Inbox: another reader is already waiting")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    async def get(self) -> T:
        """The oldest item, waiting for one. RuntimeError if another ``get`` is waiting."""
        while self._head == len(self._items):
            await self.wait()
        return self.get_nowait()

    def get_nowait(self) -> T:
        """The oldest item; IndexError when there is none."""
        items, head = self._items, self._head
        if head == len(items):
            raise IndexError("Inbox.get_nowait: empty")
        item = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= 32 and head * 2 >= len(items):  # a reader that never quite catches up
            del items[:head]
            head = 0
        else:
            items[head - 1] = None
        self._head = head
        return item  # type: ignore[return-value]  # never a taken (None) slot

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head == len(self._items)


class Gate:
    """The part of ``asyncio.Event`` uvicorn's protocol uses for "the transport takes writes"
    (``set``, ``clear``, ``is_set``, ``wait``); open when made, no waiter list until one waits."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if not self._open:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        return True


class Pending:
    """One call waiting in a ``DelayQueue``; ``cancel()`` it as a ``TimerHandle``."""

    __slots__ = ("at", "target")

    def __init__(self, at: float, target: Any) -> None:
        self.at = at
        self.target: Any = target  # None once cancelled or called

    def cancel(self) -> None:
        self.target = None


# Each loop's ``DelayQueue``s, by delay and call (several loops: tests run servers in threads).
_DELAY_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, DelayQueue]]
_DELAY_QUEUES = weakref.WeakKeyDictionary()


class DelayQueue:
    """``fire(target)`` ``delay`` seconds after each ``add(target)``, for any number of targets:
    one FIFO and one loop timer (for its head) instead of a ``TimerHandle`` per call (about 0.5 KB
    each with uvloop's timer). Every call has the same delay, so the queue is in time order.
    Cancelled calls stay queued until they come due (at most ``delay`` seconds)."""

    def __init__(self, delay: float, fire: Callable[[Any], None]) -> None:
        # Not the loop: the queue is its loop's value in ``_DELAY_QUEUES`` and must not keep it alive.
        self._delay = delay
        self._fire = fire
        self._queue: collections.deque[Pending] = collections.deque()
        self._armed = False  # a timer is set for the head (its handle is not kept: it holds the loop)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, delay: float, fire: Callable[[Any], None]) -> DelayQueue:
        """The queue of ``loop`` for ``delay`` and ``fire``, made on first use."""
        queues = _DELAY_QUEUES.get(loop)
        if queues is None:
            queues = _DELAY_QUEUES[loop] = {}
        queue = queues.get((delay, fire))
        if queue is None:
            queue = queues[delay, fire] = cls(delay, fire)
        return queue

    def add(self, target: Any) -> Pending:
        """Call ``fire(target)`` in ``delay`` seconds, unless the returned call is cancelled."""
        loop = asyncio.get_running_loop()
        pending = Pending(loop.time() + self._delay, target)
        self._queue.append(pending)
        if not self._armed:
            loop.call_at(pending.at, self._run, pending.at)
            self._armed = True
        return pending

    def _run(self, armed_at: float) -> None:
        self._armed = False
        loop = asyncio.get_running_loop()
        queue, now = self._queue, time_at_timer(loop, armed_at)
        while queue and queue[0].at <= now:
            pending = queue.popleft()
            target, pending.target = pending.target, None
            if target is not None:
                try:
                    self._fire(target)
                except Exception as exc:  # noqa: BLE001 - reported as a timer callback's would be; the rest go on
                    loop.call_exception_handler({"message": "DelayQueue call failed", "exception": exc})
        if queue:
            loop.call_at(queue[0].at, self._run, queue[0].at)
            self._armed = True


FLUSH_INTERVAL = 0.001  # seconds: how long a busy loop's frames may wait for more to the same connection
BUSY_WRITES = 64  # connections written to within FLUSH_INTERVAL that make a loop busy

# Each loop's ``Flushes`` (several loops: tests run servers in threads).
_FLUSHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flushes] = weakref.WeakKeyDictionary()


class Flushes:
    """The end-of-turn writes of one loop's ``FrameWriter``s: one loop callback writes every
    connection written to in the turn, instead of a callback each.

    While the loop is busy writing (``BUSY_WRITES`` connections written to since the current
    ``FLUSH_INTERVAL`` began), the next round waits until that interval is over, and each
    connection gets what came meanwhile in the same write: the updates of a busy room go out to
    each of its clients a few at a time, one system call for several, instead of one system
    call per update and client, which is where a busy room's time goes. A quiet loop (a room at
    10 updates per second, a storm of joining clients) writes at the end of the turn. Busy,
    a frame waits at most ``FLUSH_INTERVAL`` longer (give or take the loop timer's 1 ms
    resolution)."""

    __slots__ = ("_armed", "_until", "_writers", "_written")

    def __init__(self) -> None:
        # Not the loop: this is its loop's value in ``_FLUSHES`` and must not keep it alive.
        self._writers: list[FrameWriter] = []
        self._armed = False  # a round is due (end of turn, or end of the interval)
        self._until = float("-inf")  # when the current interval ends
        self._written = 0  # connections written to in it

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Flushes:
        """``loop``'s, made on first use."""
        flushes = _FLUSHES.get(loop)
        if flushes is None:
            flushes = _FLUSHES[loop] = cls()
        return flushes

    def add(self, writer: FrameWriter, loop: asyncio.AbstractEventLoop) -> None:
        """Have ``writer`` flushed in the next round (called with its first pending frame)."""
        self._writers.append(writer)
        if not self._armed:
            self._armed = True
            loop.call_soon(self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop, armed_at: float | None = None) -> None:
        # ``armed_at``: run by the timer put at the end of a busy interval (``time_at_timer``).
        now = loop.time() if armed_at is None else time_at_timer(loop, armed_at)
        if now >= self._until:
            self._until, self._written = now + FLUSH_INTERVAL, 0
        elif self._written >= BUSY_WRITES:
            loop.call_at(self._until, self._run, loop, self._until)
            return
        self._armed = False
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                if writer.flush():
                    self._written += 1
            except Exception as exc:  # noqa: BLE001 - reported as a callback's would be; the others are written
                loop.call_exception_handler({"message": "FrameWriter flush failed", "exception": exc})


def text_frame(text: str) -> bytes:
    """An unmasked, final text frame carrying ``text`` (UTF-8, RFC 6455 5.6)."""
    return binary_frame(text.encode(), 0x81)


class FrameWriter:
    """Writes data frames (binary, or text for a ``str``) of one accepted WebSocket connection to
    its transport. The frames written during one turn of the event loop go out in one transport
    write at the end of that turn (``flush``, called by ``Flushes``; while the loop is busy
    writing, at the end of the current ``FLUSH_INTERVAL``): one system call for a whole batch of
    events or updates to this connection, not one per frame."""

    __slots__ = ("_flushes", "_head", "_loop", "_pending", "_protocol", "writable")

    def __init__(self, protocol: CollabWebSocketProtocol) -> None:
        self._protocol = protocol
        self._loop = protocol.loop
        self._flushes = Flushes.of(protocol.loop)
        self._pending: list[bytes] | None = None
        self._head = False  # the first pending item is the 101
        self.writable: Gate = protocol.writable  # closed while the transport is paused

    def write_head(self, head: bytes) -> None:
        """Write ``head``, the 101 answering the upgrade, at the end of this turn ahead of the
        frames written in it: the answer and the first messages (a room's sync step 1) go out in
        one system call. The protocol is told once it is written (``head_written``)."""
        if self._pending is None:
            self._pending = [head]
            self._flushes.add(self, self._loop)
        else:
            self._pending.insert(0, head)
        self._head = True

    def write(self, payload: bytes | str | Framed) -> bool:
        """Write ``payload`` as one frame (binary; text for a ``str``; ``Framed`` as framed), at
        the end of this turn of the loop. False when the connection cannot send any more (closed,
        closing, or not accepted yet); nothing is written then."""
        protocol = self._protocol
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or protocol.transport.is_closing()
        ):
            return False
        if isinstance(payload, Framed):
            frame = payload.wire
        elif isinstance(payload, str):
            frame = text_frame(payload)
        else:
            frame = binary_frame(payload)
        if self._pending is None:
            self._pending = [frame]
            self._flushes.add(self, self._loop)
        else:
            self._pending.append(frame)
        return True

    def flush(self) -> bool:
        """Write the pending frames now (before anything else is sent the ordinary way, such as a
        close frame, so that nothing overtakes them); whether anything was written. Once a close
        frame went out, or the transport is closing, they are dropped: nothing may follow a close
        frame (RFC 6455 section 5.5.1)."""
        pending, self._pending = self._pending, None
        protocol = self._protocol
        if not pending or protocol.close_sent or protocol.transport.is_closing():
            return False
        protocol.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._head:
            self._head = False
            protocol.head_written()
        return True


# -- the opening handshake (RFC 6455 section 4.2) ----------------------------------------------------

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value answering a client's ``Sec-WebSocket-Key`` (RFC 6455
    section 4.2.2): base64 of the SHA-1 of the key followed by the protocol's GUID."""
    return base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())


class Refusal(NamedTuple):
    """Why an upgrade request is refused: HTTP status, JSON error code, message, extra headers."""

    status: int
    code: str
    message: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def check_upgrade(method: str, http_version: str, headers: list[tuple[bytes, bytes]]) -> bytes | Refusal:
    """The client's ``Sec-WebSocket-Key`` if the upgrade request is valid (RFC 6455 section 4.2.1),
    otherwise why not. ``headers`` as httptools parsed them (names lowercase); the ``Connection:
    upgrade`` and ``Upgrade: websocket`` fields were checked before the upgrade was handed over
    (uvicorn's ``_should_upgrade``, with ``serving.GuardedHttpProtocol._get_upgrade``)."""
    if method != "GET":
        return Refusal(
            405, "method_not_allowed", "a WebSocket upgrade is a GET request", ((b"allow", b"GET"),)
        )
    if http_version != "1.1":
        return Refusal(400, "bad_request", "a WebSocket upgrade needs HTTP/1.1")
    keys = [value.strip() for name, value in headers if name == b"sec-websocket-key"]
    versions = [value.strip() for name, value in headers if name == b"sec-websocket-version"]
    if any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in headers
    ):
        return Refusal(400, "bad_request", "a WebSocket upgrade request has no body")
    if versions != [b"13"]:
        return Refusal(
            426,
            "upgrade_required",
            "this server speaks WebSocket version 13 (Sec-WebSocket-Version)",
            ((b"sec-websocket-version", b"13"),),
        )
    if len(keys) != 1:
        return Refusal(400, "bad_request", "a WebSocket upgrade needs one Sec-WebSocket-Key header")
    key = keys[0]
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid = False
    if not valid:
        return Refusal(400, "bad_request", "Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def path_and_query(target: bytes) -> tuple[bytes, bytes] | None:
    """The path and query of a request target in origin or absolute form (RFC 9112 section 3.2),
    or None when it has no path."""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return None
    path: bytes = url.path or b""
    return (path, url.query or b"") if path.startswith(b"/") else None


class _RequestHead:
    """httptools' callbacks for one request head: its target and fields (names lowercase)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True


_LOGGER = logging.getLogger("uvicorn.error")
# The parts of a connection's ASGI scope that are the same for every connection, shared between
# them: the service's application and middleware only read them.
_ASGI: dict[str, Any] = {version: {"version": version, "spec_version": "2.4"} for version in ("2.0", "3.0")}
_SUPPORTED: dict[str, Any] = {}  # an extension's entry: supported, without parameters


class CollabWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with its own opening handshake (``upgrade``),
    ``FrameWriter``, batched read pauses and a smaller idle footprint (see the module docstring).

    The handshake: uvicorn's HTTP protocol (httptools) has parsed the upgrade request already;
    uvicorn would write it out again for ``websockets`` to parse, validate and answer with a
    response object of its own. ``upgrade`` takes httptools' parse instead, checks what RFC 6455
    asks of the request (``check_upgrade``), builds the ASGI scope and starts the application;
    the 101 is written when the application accepts. Frames are read and written by
    ``ws_frames.ServerFrames`` (``self.conn``), which does what uvicorn's methods ask of a
    ``websockets`` protocol, in a fraction of its memory. No extension is negotiated (uvicorn's
    ``ws_per_message_deflate`` is not offered; the service turns it off)."""

    # Every attribute uvicorn's methods and this class set, in slots: an instance dict with this
    # many keys cannot share them with the other instances' dicts (1.6 KB a connection).
    __slots__ = (
        "_accept",
        "accepted",
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's attributes (``WebSocketsSansIOProtocol.__init__``), without what it builds that
        # this class replaces: an asyncio.Queue and Event, a websockets protocol waiting for a request
        # (``ServerFrames`` stands in for it).
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.logger = _LOGGER
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"
        self.queue: Inbox[ASGIReceiveEvent] = Inbox()  # type: ignore[assignment]
        self.handshake_initiated = False
        self.handshake_complete = False
        self.close_sent = False
        self.disconnected = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.close_timeout = 10.0
        self.initial_response: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.conn: ServerFrames = ServerFrames(config.ws_max_size)  # type: ignore[assignment]
        self.read_paused = False
        self.writable: Gate = Gate()  # type: ignore[assignment]
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.pending_ping_payload: bytes | None = None
        self.ping_sent_at = 0.0
        self.last_ping_rtt = 0.0
        self.frames: list[bytes] = []
        self.curr_msg_data_type = "bytes"
        self.request = self.response = None  # type: ignore[assignment]  # websockets' objects: none here
        self.scope = None  # type: ignore[assignment]  # until the upgrade is taken (and once the app is done)
        self._accept: bytes = b""  # Sec-WebSocket-Accept, once the request is checked
        self.accepted = False  # the 101 is written: frames are parsed from here on

    def adopt(
        self,
        transport: asyncio.Transport,
        *,
        server: tuple[str, int | None] | None,
        client: tuple[str, int] | None,
        tls: bool,
    ) -> None:
        """``connection_made`` for a connection whose HTTP protocol knows its addresses already."""
        self.connections.add(self)
        self.transport = transport
        self.server, self.client = server, client
        self.scheme = "wss" if tls else "ws"

    def upgrade(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], http_version: str
    ) -> None:
        """Take over the upgrade request ``method target`` with ``headers`` (names lowercase, as
        uvicorn's httptools protocol parsed them): refuse it with a JSON error (``check_upgrade``;
        400 for a target without a path), or start the application with its ASGI scope."""
        self.handshake_initiated = True
        if self.logger.isEnabledFor(logging.DEBUG):  # as websockets logs a handshake (tokens redacted)
            self.logger.debug("< %s %s HTTP/%s", method, target.decode("latin-1"), http_version)
            for name, value in headers:
                self.logger.debug("< %s: %s", name.decode("latin-1"), value.decode("latin-1"))
        parts = path_and_query(target)
        if parts is None:
            self._refuse_upgrade(Refusal(400, "bad_request", "the request target has no path"))
            return
        key = check_upgrade(method, http_version, headers)
        if isinstance(key, Refusal):
            self._refuse_upgrade(key)
            return
        self._accept = accept_key(key)
        raw_path, query = parts
        subprotocols = [
            token.strip()
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for token in value.decode("latin-1").split(",")
        ]
        extensions: dict[str, Any] = {
            "websocket.http.response": _SUPPORTED,
            FRAMES_EXTENSION: FrameWriter(self),
        }
        self.scope: WebSocketScope = {
            "type": "websocket",
            "asgi": _ASGI[self.asgi_version],
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": self.root_path,
            "path": self.root_path + unquote(raw_path.decode("ascii", "surrogateescape")),
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": query,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": extensions,
        }
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)

    def _upgrade_from(self, request: bytes) -> None:
        """Take over an upgrade request written out again by uvicorn's own HTTP protocol (run as
        ``uvicorn --ws server.websocket:CollabWebSocketProtocol`` without ``serving``'s HTTP
        protocol, which hands over the request it parsed instead)."""
        head = _RequestHead()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(request)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            head.complete = False
        if not head.complete:
            self.handshake_initiated = True
            self._refuse_upgrade(Refusal(400, "bad_request", "the request is not valid HTTP/1.1"))
            return
        self.upgrade(parser.get_method().decode("latin-1"), head.url, head.headers, parser.get_http_version())

    def _refuse_upgrade(self, refusal: Refusal) -> None:
        self.logger.info("refused a WebSocket upgrade: %d %s", refusal.status, refusal.message)
        self.handshake_complete = self.close_sent = True
        self.transport.write(error_response(refusal.status, refusal.code, refusal.message, refusal.headers))
        self.transport.close()

    def _write_accept(self, message: WebSocketAcceptEvent) -> None:
        """Write the 101 answering the upgrade (RFC 6455 section 4.2.2) with the server's default
        headers (``date``, ``server``) and the application's."""
        head = [
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-accept: ",
            self._accept,
            b"\r\n",
        ]
        for name, value in [*self.default_headers, *message.get("headers", [])]:
            head += [name, b": ", value, b"\r\n"]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            head += [b"sec-websocket-protocol: ", subprotocol.encode(), b"\r\n"]
        head.append(b"\r\n")
        response = b"".join(head)
        if self.logger.isEnabledFor(logging.DEBUG):
            for line in response.decode("latin-1").split("\r\n")[:-2]:
                self.logger.debug("> %s", line)
        self.handshake_complete = True
        self._frame_writer().write_head(response)

    def head_written(self) -> None:
        """The 101 is written (``FrameWriter.flush``): frames are read from here on, and the
        keepalive pings start."""
        self.accepted = True
        self.start_keepalive()
        if self._unparsed is not None:  # frames that came with or after the request: now, in order
            self.loop.call_soon(self._parse_more)

    def _write_pending(self) -> None:
        """Write what the frame writer holds now (a 101 held for the end of the turn, frames
        written since the last round): something is about to be written (or the connection
        closed) the ordinary way."""
        if self.handshake_complete and not self.close_sent and self.scope is not None:
            self._frame_writer().flush()

    def _frame_writer(self) -> FrameWriter:
        return cast(FrameWriter, self.scope["extensions"][FRAMES_EXTENSION])

    # Bytes received but not parsed yet (see the module docstring); a class attribute until needed,
    # so an idle connection holds no slot for it. While it is set, reading is paused.
    _unparsed: bytearray | None = None
    _frames_this_turn: int | None = None  # counted while ``_parse`` runs

    def data_received(self, data: bytes) -> None:
        if not self.handshake_initiated:  # handed over by uvicorn's own HTTP protocol: the request
            self._upgrade_from(data)
            return
        if self._unparsed is not None:  # reading is paused while it is set; should a read come, in order
            self._unparsed += data
        elif not self.accepted:
            # Before the 101 is written (a client should wait for it, RFC 6455 section 4.1): held,
            # unparsed and unanswered, with reading paused, until it is; dropped once the
            # application refused (the refusal's close lingers).
            if not self.close_sent and self.initial_response is None:
                self._unparsed = bytearray(data)
                self.transport.pause_reading()
        elif len(data) <= PARSE_BYTES:
            self.feed(data)
        else:
            self._parse(data)

    def feed(self, data: bytes) -> None:
        """Parse ``data`` now (uvicorn's ``data_received``); every part of a read goes through it.
        Once a fault failed the connection, nothing more is parsed or answered."""
        if self.conn.parser_exc is None:
            super().data_received(data)

    def _parse(self, data: bytes | bytearray, *, owned: bool = False) -> None:
        """Parse ``data`` ``PARSE_BYTES`` at a time until ``TURN_FRAMES`` frames came out of it (or
        the application's queue is full), and keep the rest for a later turn of the loop: the next
        one, or, when the queue is full, once the application has taken what it holds. A large
        frame is parsed in one turn; tens of thousands of tiny ones are not. ``owned``: ``data``
        is this protocol's own buffer (``_unparsed``), kept and trimmed instead of copied."""
        view = memoryview(data)
        start = 0
        self._frames_this_turn = 0
        try:
            while start < len(view):
                self.feed(bytes(view[start : start + PARSE_BYTES]))
                start += PARSE_BYTES
                if self.read_paused or self._frames_this_turn >= TURN_FRAMES:
                    break
        finally:
            del self._frames_this_turn  # back to the class's None
        if start < len(view):
            if owned and isinstance(data, bytearray):  # left by an earlier turn: trimmed in place
                view.release()
                del data[:start]
                self._unparsed = data
            else:
                self._unparsed = bytearray(view[start:])
            self.transport.pause_reading()
            if not self.read_paused:
                self.loop.call_soon(self._parse_more)

    def handle_events(self) -> None:
        if self._frames_this_turn is not None:
            self._frames_this_turn += len(self.conn.events)
        super().handle_events()

    def _parse_more(self) -> None:
        unparsed = self._unparsed
        if unparsed is None or self.read_paused or not self.accepted:  # parsed, queue full, or held
            return
        del self._unparsed  # back to the class's None
        self._parse(unparsed, owned=True)
        self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again unless something still holds reading: bytes not parsed yet, a full queue, or
        a full send buffer (``pause_writing``)."""
        held = self._unparsed is not None or self.read_paused or not self.writable.is_set()
        if not held and not self.disconnected:
            self.transport.resume_reading()

    # A peer that sends but does not read (pings, whose pongs are written at once, or requests
    # answered on the event channel) is not read from while the transport's send buffer is over
    # its high-water mark: what it sends cannot pile up answers in the server's memory.

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._resume_reading()

    def _parse_all(self) -> None:
        """Parse everything left at once (the connection is ending); what was held for an upgrade
        that was never accepted is dropped."""
        unparsed = self._unparsed
        if unparsed is not None:
            del self._unparsed
            if self.accepted:
                self.feed(bytes(unparsed))

    async def receive(self) -> ASGIReceiveEvent:
        queue: Inbox[ASGIReceiveEvent] = self.queue
        while queue.empty():
            await queue.wait()
        message = queue.get_nowait()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if self._unparsed is not None:
                # On a later turn: the application waits for it, and others get their turn first.
                self.loop.call_soon(self._parse_more)
            else:
                self._resume_reading()
        return message

    async def run_asgi(self) -> None:
        """uvicorn's, except that what the frame writer holds (a 101 held for the end of the turn,
        frames) is written before the connection is closed when the application returns or fails."""
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        self._write_pending()
        if self.close_timer is None:
            self.transport.close()

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        # The application is done with the connection. Its scope goes: the frame writer in it
        # refers back to this protocol, a cycle that would leave a closed connection's objects
        # to the garbage collector instead of freeing them as soon as the connection is lost.
        self.scope = None  # type: ignore[assignment]

    def shutdown(self) -> None:
        """The server stops: close with 1012 (uvicorn's), unless a close frame went out already,
        the peer's echoed or one of a failure, which the application has not sent itself: then
        the connection only ends (a second close frame would be refused with ``InvalidState``)."""
        if self.handshake_complete and self.conn.state is not OPEN:
            self.close_sent = True
        self._write_pending()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._parse_all()  # what the client sent before it left is the application's
        super().connection_lost(exc)

    # A peer that stopped reading: uvicorn gives up on it (no pong in time; no answer to the
    # server's close frame in ``close_timeout`` seconds) by closing the transport, which waits
    # until everything buffered is written, so such a peer would hold its connection (and place)
    # for ever. With data still buffered, the transport is aborted instead.

    def _abort_if_unread(self) -> None:
        if self.transport.is_closing() and self.transport.get_write_buffer_size() > 0:
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_if_unread()

    # Keepalive pings (every ``ws_ping_interval`` seconds, counted from the last pong) and their
    # pong deadlines (``ws_ping_timeout``) wait in one ``DelayQueue`` each, shared by the loop's
    # connections, instead of a timer per connection: ``Pending`` cancels as uvicorn's code
    # expects of its ``TimerHandle``.

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        queue = DelayQueue.of(self.loop, self.ping_interval, type(self).send_keepalive_ping)
        self.ping_timer = queue.add(self)  # type: ignore[assignment]

    def send_keepalive_ping(self) -> None:
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing():
            return
        # A random payload identifies this ping: ``handle_pong`` ignores stale or unsolicited pongs.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            queue = DelayQueue.of(self.loop, self.ping_timeout, type(self).keepalive_timeout)
            self.pong_timer = queue.add(self)  # type: ignore[assignment]
        else:
            self.schedule_ping()

    def _close_timed_out(self) -> None:
        self.close_timer = None
        self.transport.close()
        self._abort_if_unread()

    async def send(self, message: ASGISendEvent) -> None:
        if (
            message["type"] == "websocket.accept"
            and not self.handshake_complete
            and self.initial_response is None
        ):
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if not self.transport.is_closing():
                self._write_accept(message)
        else:
            self._write_pending()
            await super().send(message)
        if message["type"] == "websocket.close":
            self._parse_all()  # its frames are dropped; the peer's close reply is awaited
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = self.loop.call_later(self.close_timeout, self._close_timed_out)
        elif message["type"] == "websocket.accept" and self.handshake_complete:
            # Answered: what only the upgrade needed can go, and from here on the connection is
            # closed the WebSocket way (a refused upgrade's close lingers: ``LingeringTransport``).
            self.scope["headers"] = []
            if isinstance(self.transport, LingeringTransport):
                self.transport = self.transport.transport

    def send_receive_event_to_app(self) -> None:
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the application is past its close: the peer's close reply is awaited
        if self.curr_msg_data_type == "text":
            try:
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.logger.info("closed a WebSocket that sent invalid UTF-8 in a text frame (1007)")
                # Failed, not closed: a close frame that came in the same read is echoed already,
                # and then no second one is sent (RFC 6455 section 7.1.7).
                self.conn.fail(1007)
                self.handle_parser_exception()
                return
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and (
            self.queue.qsize() >= READ_QUEUE_FRAMES or len(data) >= READ_QUEUE_LARGE
        ):
            self.read_paused = True
            self.transport.pause_reading()
