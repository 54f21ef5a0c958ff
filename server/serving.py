"""uvicorn, guarded: a bounded request head (time and bytes) before any request reaches the app, an
answer to every WebSocket upgrade, and a graceful drain on SIGTERM before uvicorn closes sockets.

- ``guarded_http(settings)``: uvicorn's httptools protocol, except that a connection must send its
  complete request line and headers within ``HANDSHAKE_TIMEOUT`` seconds of opening (or of the end
  of its previous request), and within ``MAX_REQUEST_HEAD_SIZE`` bytes, each line within 8,000 bytes
  and at most 100 header fields. Otherwise it is answered (408, 414 for a request line, 431 for
  headers; JSON error body) and closed. uvicorn itself waits forever for a head, and would drop
  frames sent in the same read as an upgrade request, which follow it here.
  A connection closed while its request is still arriving (or refused before it was complete,
  or a WebSocket upgrade not accepted) is closed lingering (``lingering.py``, RFC 9112 section
  9.6), so that what the client still sends cannot reset the connection before it reads the answer.
- A WebSocket upgrade goes to ``websocket.CollabWebSocketProtocol`` with the request httptools
  parsed; it answers an invalid one (405, 400, 426) with a JSON error instead of leaving the socket
  open and unanswered, as uvicorn's protocol does with a request ``websockets`` cannot parse.
- ``ProxyHeaders`` (installed by ``trust_proxies``): uvicorn's proxy-headers middleware
  (``FORWARDED_ALLOW_IPS``), without a coroutine of its own in every connection.
- ``DrainingServer``: on SIGTERM/SIGINT, before uvicorn's own shutdown (which would close every
  WebSocket with 1012 and no reason, then run the app's shutdown), the app drains: it refuses new
  connections, closes its WebSockets with 1012 ``service restarting`` and stores every pending
  update, within ``SHUTDOWN_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import httptools
import uvicorn
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Settings
from .errors import error_response
from .lingering import LingeringTransport
from .websocket import CollabWebSocketProtocol, DelayQueue, Pending

log = logging.getLogger(__name__)

MAX_LINE = 8000  # below websockets' own 8,192-byte line limit, so an upgrade is judged here
MAX_HEADERS = 100  # below websockets' own 128


class GuardedHttpProtocol(HttpToolsProtocol):
    """See the module docstring. ``head_timeout`` and ``max_head`` are set by ``guarded_http``."""

    head_timeout = 10.0
    max_head = 16 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = LingeringTransport(transport)
        super().connection_made(self._lingering)  # type: ignore[arg-type]
        self._head = bytearray()
        self._received = b""
        self._in_head = True
        self._head_timer: Pending | None = None
        self._start_head_timer()  # a client that sends nothing is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._after_responses is not None:  # reading was paused, and resumed by uvicorn's flow control
            self._held += data  # kept, in order, for what waits (an upgrade's frames)
            self.transport.pause_reading()
            return
        if self._in_head and not self._check_head(data):
            return
        self._received = data  # for handle_websocket_upgrade: what follows the head in this read
        try:
            super().data_received(data)
        finally:
            self._received = b""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._lingering.linger = True  # until the request is complete

    def on_message_complete(self) -> None:
        self._lingering.linger = False
        super().on_message_complete()
        # A keep-alive connection's next request gets the same bounds (its timer starts with its
        # first byte: uvicorn's keep-alive timeout covers the idle time before it).
        self._in_head = True
        self._head.clear()

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to ``CollabWebSocketProtocol`` with the request httptools parsed
        (uvicorn would write the head out again for ``websockets`` to parse), then what followed
        the head in the same read. An upgrade pipelined behind requests whose responses are not
        complete waits for them (its 101 must not overtake them): reading stops meanwhile."""
        self._lingering.linger = True  # until accepted: a refusal's close lingers
        upgrade = sys.exc_info()[1]  # called while httptools' HttpParserUpgrade is handled
        # Frames sent in the same read as the request (a client should wait for the 101, RFC 6455
        # section 4.1, but one that does not must not lose them, nor its close frame and with it
        # the connection) follow it, in order, once it is accepted.
        rest = b""
        if isinstance(upgrade, httptools.HttpParserUpgrade) and upgrade.args:
            rest = self._received[upgrade.args[0] :]
        method, target, headers = self.scope["method"], self.url, self.headers
        http_version = self.parser.get_http_version()
        self._after_earlier_responses(
            lambda: self._upgrade(method, target, headers, http_version, rest + self._held)
        )

    # -- what must not overtake a response still being written ----------------------------------------

    _after_responses: Callable[[], None] | None = None
    _held = b""

    def _after_earlier_responses(self, action: Callable[[], None]) -> None:
        """Run ``action`` (an upgrade's 101, a refusal that ends the connection) now, or, while an
        earlier pipelined request is still being answered, once every such response is complete:
        its bytes must not overtake them. Reading stops meanwhile."""
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            self._after_responses = action
            self.transport.pause_reading()
        else:
            action()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        action = self._after_responses
        answered = self.cycle is None or self.cycle.response_complete
        if action is not None and answered and not self.pipeline and not self.transport.is_closing():
            del self._after_responses
            if self.timeout_keep_alive_task is not None:  # armed by uvicorn for an idle connection
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            self.transport.resume_reading()  # before the action, which may pause it again
            action()

    def _upgrade(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], http_version: str, rest: bytes
    ) -> None:
        self.connections.discard(self)
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        assert isinstance(protocol, CollabWebSocketProtocol)
        protocol.adopt(self.transport, server=self.server, client=self.client, tls=self.scheme == "https")
        self.transport.set_protocol(protocol)
        protocol.upgrade(method, target, headers, http_version)
        # This protocol is done with: its parser holds its callbacks (bound methods), a cycle that
        # only the garbage collector would free, with everything the protocol holds.
        self.parser = None  # type: ignore[assignment]
        if rest:
            protocol.data_received(rest)

    def _get_upgrade(self) -> bytes | None:
        """uvicorn's, except that every ``Connection`` field counts (a list may be split over
        several fields, RFC 9110 section 5.3) and whitespace around the ``Upgrade`` value does not."""
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection += [token.lower().strip() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.lower().strip()
        return upgrade if b"upgrade" in connection else None

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse: 400 with the JSON error body (uvicorn's is plain text),
        after the responses to the requests before it, and the connection closed, lingering."""
        log.info("refused a request from %s:%s: 400 %s", *(self.client or ("?", 0)), msg)
        self._lingering.linger = True
        self._after_earlier_responses(
            lambda: self._end_with(error_response(400, "bad_request", "the request is not valid HTTP/1.1"))
        )

    def _end_with(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- the request head ---------------------------------------------------------------------------

    def _check_head(self, data: bytes) -> bool:
        """Account for ``data`` while the head is incomplete. False once the request was refused."""
        if self._head_timer is None:
            self._start_head_timer()
        searched_from = max(0, len(self._head) - 3)
        self._head += data[: self.max_head + 4 - len(self._head)]
        end = self._head.find(b"\r\n\r\n", searched_from)
        head = self._head if end < 0 else self._head[: end + 2]
        status = self._too_large(head, complete=end >= 0)
        if status is not None:
            self._refuse(status)
            return False
        if end >= 0:
            self._in_head = False
            self._head.clear()
            self._stop_head_timer()
        return True

    def _too_large(self, head: bytearray, *, complete: bool) -> int | None:
        first_line_end = head.find(b"\r\n")
        if (first_line_end < 0 and len(head) > MAX_LINE) or first_line_end > MAX_LINE:
            return 414
        if len(head) > self.max_head or (not complete and len(head) >= self.max_head):
            return 431
        lines = head.split(b"\r\n")
        if len(lines) > MAX_HEADERS + 2 or any(len(line) > MAX_LINE for line in lines):
            return 431
        return None

    def _refuse(self, status: int) -> None:
        messages = {
            408: ("request_timeout", f"the request head did not arrive within {self.head_timeout:g} s"),
            414: ("uri_too_long", f"the request line is longer than {MAX_LINE} bytes"),
            431: (
                "request_header_fields_too_large",
                f"the request head is larger than {self.max_head} bytes, has a line longer than "
                f"{MAX_LINE} bytes or more than {MAX_HEADERS} header fields",
            ),
        }
        code, message = messages[status]
        client = self.client or ("?", 0)
        log.info("refused a request from %s:%s: %d %s", *client, status, message)
        self._stop_head_timer()
        self._in_head = False
        self._lingering.linger = True  # what it was still sending would reset the connection
        self._after_earlier_responses(lambda: self._end_with(error_response(status, code, message)))

    def _start_head_timer(self) -> None:
        # One queue and timer for every connection's head deadline (``DelayQueue``), not a timer each.
        queue = DelayQueue.of(self.loop, self.head_timeout, type(self)._head_timed_out)
        self._head_timer = queue.add(self)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head:
            self._refuse(408)
        else:  # never said anything: nothing to answer
            log.info("closed a connection from %s:%s that sent nothing", *(self.client or ("?", 0)))
            self._in_head = False
            self.transport.close()


def guarded_http(settings: Settings) -> type[GuardedHttpProtocol]:
    """The HTTP protocol class for uvicorn's ``http`` option, bounded by ``settings``."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"head_timeout": settings.handshake_timeout, "max_head": settings.max_request_head_size},
    )


class ProxyHeaders(ProxyHeadersMiddleware):
    """uvicorn's ``ProxyHeadersMiddleware`` (the client's address and scheme from
    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` when the peer is one of ``FORWARDED_ALLOW_IPS``),
    returning the application's coroutine instead of awaiting it: no coroutine and frame of its own
    for as long as each WebSocket lives, nor one more frame to resume at every message."""

    def __call__(  # type: ignore[override]
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            self._rewrite(cast(MutableMapping[str, Any], scope))
        return self.app(scope, receive, send)

    def _rewrite(self, scope: MutableMapping[str, Any]) -> None:
        client = scope.get("client")
        if (client[0] if client else None) not in self.trusted_hosts:
            return
        proto: bytes | None = None
        forwarded_for: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
        if proto is not None:
            scheme = proto.decode("latin1").strip()
            if scheme in {"http", "https", "ws", "wss"}:
                scope["scheme"] = scheme.replace("http", "ws") if scope["type"] == "websocket" else scheme
        if forwarded_for:
            host, port = self.trusted_hosts.get_trusted_client_address(
                b", ".join(forwarded_for).decode("latin1")
            )
            if host:  # an empty X-Forwarded-For leaves the client as it is
                scope["client"] = (host, port)


class DrainingServer(uvicorn.Server):
    """See the module docstring. ``drain(timeout)`` is the app's (``CollaborationApp.drain``)."""

    def __init__(self, config: uvicorn.Config, *, drain: Callable[[float], Awaitable[None]], timeout: float):
        super().__init__(config)
        self._drain = drain
        self._drain_timeout = timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await asyncio.wait_for(self._drain(self._drain_timeout), self._drain_timeout)
        except TimeoutError:
            log.error("drain: not finished within SHUTDOWN_TIMEOUT=%g s; closing anyway", self._drain_timeout)
        except Exception:
            log.exception("drain failed; closing anyway")
        await super().shutdown(sockets)


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options these guards need (``__main__.uvicorn_config`` merges them)."""
    return {
        "http": guarded_http(settings),
        "ws": CollabWebSocketProtocol,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        "interface": "asgi3",  # the application's ``__call__`` returns its coroutine (``ProxyHeaders``)
    }


def trust_proxies(config: uvicorn.Config) -> None:
    """Have ``ProxyHeaders`` do what uvicorn's own middleware would (``proxy_headers``, on by
    default, trusting ``FORWARDED_ALLOW_IPS``)."""
    if config.proxy_headers:
        config.app = ProxyHeaders(cast(Any, config.app), trusted_hosts=config.forwarded_allow_ips)
        config.proxy_headers = False
