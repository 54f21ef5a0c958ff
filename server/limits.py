"""Limits every transport enforces, in one place: body sizes, rates (per connection, and per user
and address with the ``limits`` library), admission (connections in all, per user, per address)
and origins. The README's "Protection" section says what a client sees for each."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import MemoryStorage as SyncMemoryStorage
from limits.strategies import FixedWindowRateLimiter

from . import metrics
from .auth import TokenError, authenticate
from .channel import Channel, FrameRejected
from .close_codes import CLOSE_4429_RATE_LIMITED, CloseCode
from .config import Settings
from .connection import Connection
from .errors import (
    PayloadTooLarge,
    RateLimited,
    ServerFull,
    ServiceError,
    TooManyConnections,
    error_body,
)
from .ws_frames import Framed

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Any


class BodyLimit:
    """ASGI middleware: an HTTP request body over ``limit`` bytes is refused with 413 and the JSON
    error body as soon as it is known to be too large (from ``Content-Length``, or while it
    arrives), before the application has read any of it. Requests for which ``exempt(scope)`` is
    true (routes that enforce their own, larger limit as they read) pass through."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # Without a (truthful) Content-Length, the body is read here, up to the limit, before the
        # application sees it (the limit is small: JSON, not documents).
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        await send_error(send, PayloadTooLarge(f"the request body is larger than {self.limit} bytes"))


# -- per-connection rates ---------------------------------------------------------------------------


# One store for every connection of this process: each connection's windows are keyed by its own
# id and expire with them. Fixed one-second windows: counters, whatever a frame's size.
_CONNECTION_STORAGE = SyncMemoryStorage()
_CONNECTION_WINDOWS = FixedWindowRateLimiter(_CONNECTION_STORAGE)
_connection_keys = itertools.count(1)
# A connection's server time is counted in the window store once it adds up to this much.
TIME_GRAIN_US = 1000


def _until_next_window(item: RateLimitItem, *identifiers: str) -> float:
    """Seconds until the connection window of ``item`` and ``identifiers`` starts again (at least 1 ms)."""
    reset_time = _CONNECTION_WINDOWS.get_window_stats(item, *identifiers).reset_time
    return max(reset_time - time.time(), 0.001)


class _ServerTime:
    """One connection's allowance of server time, in microseconds a second, counted in its own
    ``limits`` window (``key``, "time"). Charges add up until ``TIME_GRAIN_US`` before they are
    counted; what a window cannot take is a debt."""

    __slots__ = ("debt", "demand", "held_since", "item", "key", "last_held", "uncounted", "words")

    def __init__(self, time_ms: int, key: str) -> None:
        self.item = RateLimitItemPerSecond(time_ms * 1000)
        self.words = f"{time_ms} ms of server time per second"
        self.key = key
        self.debt = 0  # microseconds not yet taken from a window
        self.uncounted = 0.0  # microseconds charged and not yet counted
        self.held_since: float | None = None  # first held for its debt, and held again within 2 s since
        self.last_held = -math.inf
        self.demand = 0.0  # microseconds charged since held_since (served or owed)

    def charge(self, seconds: float) -> None:
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        microseconds = seconds * 1_000_000
        self.uncounted += microseconds
        if self.held_since is not None:
            self.demand += microseconds
        if self.uncounted >= TIME_GRAIN_US:  # counted a millisecond or more at a time
            whole = int(self.uncounted)
            self.uncounted -= whole
            self.debt += whole
            self.pay()

    def pay(self) -> None:
        """Pay the debt from the current window, as far as it goes."""
        remaining = _CONNECTION_WINDOWS.get_window_stats(self.item, self.key, "time").remaining
        taken = min(self.debt, remaining)
        if taken > 0:
            _CONNECTION_WINDOWS.hit(self.item, self.key, "time", cost=taken)
            self.debt -= taken


class ConnectionRate:
    """What one WebSocket may send and cost: messages and bytes a second, and for a document
    connection milliseconds a second of the server's time spent handling its messages (wall time
    from decoding a message until the room is done with it, counted a millisecond or more at a
    time: ``TIME_GRAIN_US``), each 0 for no limit, counted with the ``limits`` library in this
    process's memory (a connection lives on one instance). A frame over the message or byte rate
    waits for the next window; a client over either for ``close_after`` seconds is closed with
    4429. A frame larger than the byte rate counts as one second's worth. Time is counted once
    a message is handled: what its window could not take is a debt, paid from the windows that
    follow before the next frame is read; the client is closed with 4429 when it owes more than
    ``close_after`` seconds' allowance, or when it has been held for its debt for ``close_after``
    seconds (without two seconds' pause) while asking for at least 90 % of its allowance."""

    __slots__ = (
        "_exceeded",
        "_items",
        "_key",
        "_last_over",
        "_loop",
        "_time",
        "close_after",
        "description",
        "over_since",
        "transport",
    )

    def __init__(
        self, *, messages: int, size: int, close_after: float, time_ms: int = 0, transport: str = "websocket"
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport = transport  # for the rate_limited metric: "websocket" or "events"
        self._key = f"connection-{next(_connection_keys)}"
        # (one second's allowance, counts bytes, the rate in words)
        self._items: list[tuple[RateLimitItem, bool, str]] = []
        if messages > 0:
            self._items.append((RateLimitItemPerSecond(messages), False, f"{messages} messages per second"))
        if size > 0:
            self._items.append((RateLimitItemPerSecond(size), True, f"{size} bytes per second"))
        self._time = _ServerTime(time_ms, self._key) if time_ms > 0 else None
        self.close_after = close_after
        self.over_since: float | None = None  # over messages or bytes, not within for 2 s since
        self._last_over = -math.inf
        self._exceeded = ""  # the rate last gone over, in words
        self.description = " and ".join(
            [words for *_, words in self._items] + ([self._time.words] if self._time else [])
        )

    def _cost(self, item: RateLimitItem, counts_bytes: bool, size: int) -> int:
        return min(size, item.amount) if counts_bytes else 1

    def _over(self, item: RateLimitItem, counts_bytes: bool, words: str) -> float:
        """Note that the client is over ``item`` (``words``: the rate in words); the seconds until
        its window allows again."""
        metrics.rate_limited("connection_bytes" if counts_bytes else "connection_messages", self.transport)
        now = self._loop.time()
        self._last_over = now
        self._exceeded = words
        if self.over_since is None:
            self.over_since = now
        return _until_next_window(item, self._key)

    def _within(self) -> None:
        if self.over_since is not None and self._loop.time() - self._last_over > 2.0:
            self.over_since = None  # two whole windows without going over

    def try_take(self, size: int) -> float:
        """Count a frame of ``size`` bytes; 0 when every allowance holds it, otherwise the seconds
        until the first that does not would (the frame is refused)."""
        for item, counts_bytes, words in self._items:
            if not _CONNECTION_WINDOWS.hit(item, self._key, cost=self._cost(item, counts_bytes, size)):
                return self._over(item, counts_bytes, words)
        self._within()
        return 0.0

    async def pace(self, size: int) -> None:
        """Count a frame of ``size`` bytes, waiting until every allowance holds it and the debt of
        server time left by the frames before it (``charge``) is paid. Raises ``FrameRejected``
        (4429) as the class says."""
        for item, counts_bytes, words in self._items:
            cost = self._cost(item, counts_bytes, size)
            while not _CONNECTION_WINDOWS.hit(item, self._key, cost=cost):
                wait = self._over(item, counts_bytes, words)
                if self.persisting:
                    raise FrameRejected(self.closing())
                await asyncio.sleep(wait)
        self._within()
        if self._time is not None:
            await self._pay_time(self._time)

    async def _pay_time(self, allowance: _ServerTime) -> None:
        now = self._loop.time()
        if not allowance.debt:
            if allowance.held_since is not None and now - allowance.last_held > 2.0:
                allowance.held_since = None  # two whole windows without being held
            return
        while True:
            allowance.pay()
            if not allowance.debt:
                return
            now = self._loop.time()
            if allowance.held_since is None:
                allowance.held_since, allowance.demand = now, float(allowance.debt)
            allowance.last_held = now
            metrics.rate_limited("connection_time", self.transport)
            self._exceeded = allowance.words
            amount = allowance.item.amount
            if allowance.debt > self.close_after * amount:
                owed = f"{allowance.debt // 1000} ms of server time owed"
                raise FrameRejected(CLOSE_4429_RATE_LIMITED.because(f"over {allowance.words}: {owed}"))
            held = now - allowance.held_since
            if held > self.close_after and allowance.demand >= 0.9 * amount * held:
                raise FrameRejected(self.closing())
            await asyncio.sleep(_until_next_window(allowance.item, allowance.key, "time"))

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of the server's time spent handling a frame of this connection
        against its time allowance (none: nothing to count): what the current window cannot
        take becomes a debt, and ``pace`` holds the next frame until it is paid."""
        if self._time is not None:
            self._time.charge(seconds)

    def check_time(self, seconds: float) -> None:
        """For a message still being handled that has cost ``seconds`` so far: raises
        ``FrameRejected`` (4429) once charging it would leave the connection owing more than
        ``close_after`` seconds' allowance, the rule ``pace`` applies to the next frame."""
        allowance = self._time
        if allowance is None or not (seconds > 0 and math.isfinite(seconds)):
            return
        remaining = _CONNECTION_WINDOWS.get_window_stats(allowance.item, allowance.key, "time").remaining
        owed = allowance.debt + allowance.uncounted + seconds * 1_000_000 - remaining
        if owed > self.close_after * allowance.item.amount:
            metrics.rate_limited("connection_time", self.transport)
            raise FrameRejected(
                CLOSE_4429_RATE_LIMITED.because(
                    f"over {allowance.words}: one message took {seconds * 1000:.0f} ms and was not finished"
                )
            )

    @property
    def persisting(self) -> bool:
        """Over the message or byte rate, without two seconds' pause, for longer than
        ``close_after`` seconds."""
        return self.over_since is not None and self._loop.time() - self.over_since > self.close_after

    def closing(self) -> CloseCode:
        """4429, saying which rate the client went over."""
        return CLOSE_4429_RATE_LIMITED.because(
            f"over {self._exceeded or self.description} for {self.close_after:g} s"
        )


class PacedChannel:
    """A document socket read no faster than its ``ConnectionRate``: a frame over the rate is
    delivered once the client's allowance covers it, and meanwhile nothing more is read (uvicorn
    stops reading the socket, so a flooding client is held back by TCP and costs nothing). The
    reader reports the time each frame took it (``charge``): a client whose frames cost the
    server more than its time allowance is read more slowly in the same way. One that stays over
    a rate for ``close_after`` seconds is closed with 4429."""

    __slots__ = ("_channel", "_rate", "_send_now", "path")

    def __init__(self, channel: Channel, rate: ConnectionRate) -> None:
        self._channel = channel
        self._rate = rate
        self._send_now = getattr(channel, "send_now", None)
        self.path = channel.path

    async def recv(self) -> bytes:
        data = await self._channel.recv()
        await self._rate.pace(len(data))
        return data

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of the server's time spent handling the last frame received."""
        self._rate.charge(seconds)

    def check_time(self, seconds: float) -> None:
        """``ConnectionRate.check_time``."""
        self._rate.check_time(seconds)

    def send_now(self, data: bytes | str | Framed) -> bool:
        """The wrapped channel's direct write (``AsgiChannel.send_now``), when it has one."""
        return self._send_now is not None and bool(self._send_now(data))

    async def send(self, data: bytes | str | Framed) -> None:
        await self._channel.send(data)

    async def close(self, close: CloseCode) -> None:
        await self._channel.close(close)


# -- limits keyed by user and address, shared by the instances --------------------------------------


def rate_items(rate: str) -> list[RateLimitItem]:
    """The ``limits`` items of a rate setting ("50/second;1000/minute"); none when it is off."""
    rate = rate.strip()
    return [] if rate in ("", "0") else parse_many(rate)


def limits_storage_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class RateLimiter:
    """Rates keyed by user or client address (REST requests, connection attempts), counted with
    the ``limits`` library (sliding window counters): in this process's memory on one instance, in
    Redis when ``REDIS_URL`` is set, so that a client spreading its requests over the instances
    meets the same limit. When Redis cannot be reached the request is let through (and logged):
    a broken limiter must not stop the service."""

    STORAGE_TIMEOUT = 1.0

    def __init__(self, settings: Settings) -> None:
        self.storage: MemoryStorage | RedisStorage
        if settings.redis_url:
            self.storage = RedisStorage(
                limits_storage_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:limits",
                socket_timeout=self.STORAGE_TIMEOUT,
                socket_connect_timeout=self.STORAGE_TIMEOUT,
            )
        else:
            self.storage = MemoryStorage()
        self.kind = "redis" if settings.redis_url else "memory"
        self._strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.rest_user = rate_items(settings.rate_limit_rest_user)
        self.rest_ip = rate_items(settings.rate_limit_rest_ip)
        self.connect_ip = rate_items(settings.rate_limit_connect_ip)
        self._warned_at = -math.inf

    async def hit(self, items: list[RateLimitItem], *key: str) -> float | None:
        """Count one request against each item; None when all allow it (at once when there are
        none: the rate is off), otherwise the seconds until the first that refuses would allow it."""
        if not items:
            return None
        try:
            async with asyncio.timeout(self.STORAGE_TIMEOUT * 2):
                for item in items:
                    if not await self._strategy.hit(item, *key):
                        stats = await self._strategy.get_window_stats(item, *key)
                        return max(stats.reset_time - time.time(), 0.0)
        except Exception as exc:  # noqa: BLE001 - any storage failure: let the request through
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                log.warning("rate limiter storage (%s) failed, not limiting: %r", self.kind, exc)
        return None

    async def aclose(self) -> None:
        if isinstance(self.storage, MemoryStorage) and self.storage.timer is not None:
            self.storage.timer.cancel()  # its expiry task
        if isinstance(self.storage, RedisStorage):
            client = getattr(self.storage.bridge, "storage", None)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()


def client_ip(scope: Scope) -> str:
    """The client's address (uvicorn puts a trusted proxy's ``X-Forwarded-For`` there)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RestRateLimit:
    """ASGI middleware: REST requests per user (the token's subject, when it has a valid one) and
    per client address. Over either: 429 ``rate_limited`` with ``Retry-After`` and the JSON error
    body, before the request is read. Health checks are not counted (load balancers poll them)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PATHS) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        limiter: RateLimiter | None = getattr(services, "limiter", None)
        if limiter is not None:
            wait = await self._check(limiter, scope)
            if wait is not None:
                metrics.rate_limited("rest_requests", "rest")
                error = RateLimited(
                    "too many requests; retry after the number of seconds in Retry-After", retry_in=wait
                )
                await send_error(send, error)
                return
        await self.app(scope, receive, send)

    async def _check(self, limiter: RateLimiter, scope: Scope) -> float | None:
        wait = await limiter.hit(limiter.rest_ip, "rest-ip", client_ip(scope))
        if wait is not None or not limiter.rest_user:
            return wait
        try:
            principal, _ = authenticate(scope, self.settings)
        except TokenError:
            return None  # refused with 401 further in
        if principal.guest:
            return None
        return await limiter.hit(limiter.rest_user, "rest-user", principal.user_id)


EXEMPT_PATHS = ("/health", "/ws/health")


async def send_error(send: Any, error: ServiceError) -> None:
    """An HTTP response with the JSON error body and the error's headers, given before the request's
    body was read: it ends the connection (``connection: close``; the close lingers, see
    ``lingering.py``), or uvicorn would go on reading and dropping a body of any length."""
    body = json.dumps(error_body(error.code, error.message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- admission --------------------------------------------------------------------------------------


class Admission:
    """The WebSocket connections of this instance, counted from the moment one is admitted, before
    any await of its handshake, so a storm of parallel upgrades never passes ``MAX_CONNECTIONS``;
    and per user and per client address (``MAX_CONNECTIONS_PER_USER``, ``MAX_CONNECTIONS_PER_IP``)."""

    def __init__(self, *, total: int, per_user: int, per_ip: int) -> None:
        self.total = total
        self.per_user = per_user
        self.per_ip = per_ip
        self.open = 0
        self.tickets: set[Ticket] = set()
        self._ips: Counter[str] = Counter()
        self._users: Counter[str] = Counter()

    def reserve(self, ip: str) -> Ticket:
        """A place for a connection from ``ip``; raises ``ServerFull`` or ``TooManyConnections``."""
        if self.open >= self.total:
            raise ServerFull("too many connections; try again later")
        if self.per_ip and self._ips[ip] >= self.per_ip:
            metrics.rate_limited("connections_per_ip", "connection")
            raise TooManyConnections(f"too many connections from this address (at most {self.per_ip})")
        self.open += 1
        self._ips[ip] += 1
        ticket = Ticket(self, ip)
        self.tickets.add(ticket)
        return ticket

    def _claim(self, user_id: str) -> None:
        if self.per_user and self._users[user_id] >= self.per_user:
            metrics.rate_limited("connections_per_user", "connection")
            raise TooManyConnections(f"too many connections for this user (at most {self.per_user})")
        self._users[user_id] += 1

    def _release(self, ticket: Ticket) -> None:
        self.tickets.discard(ticket)
        ip, user_id = ticket.ip, ticket.user_id
        self.open -= 1
        _decrement(self._ips, ip)
        if user_id is not None:
            _decrement(self._users, user_id)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class Ticket:
    """One admitted connection's place; ``release`` (once, in a ``finally``) gives it back."""

    __slots__ = ("_admission", "_released", "conn", "ip", "user_id")

    def __init__(self, admission: Admission, ip: str) -> None:
        self._admission = admission
        self.ip = ip
        self.user_id: str | None = None
        self.conn: Connection | None = None  # set by endpoints whose connection drain must close
        self._released = False

    def claim_user(self, user_id: str) -> None:
        """Count the connection against its user; raises ``TooManyConnections``."""
        self._admission._claim(user_id)
        self.user_id = user_id

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)


# -- origins ----------------------------------------------------------------------------------------


def request_origin(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            return str(value.decode("latin-1")).strip().rstrip("/").lower()
    return None


def origin_allowed(scope: Scope, settings: Settings) -> bool:
    """A WebSocket's ``Origin`` is one of ``CORS_ORIGINS`` (any when unset or ``*``). A request
    without one (servers, bots, native apps) is allowed: the header only says which web page a
    browser is running the connection for."""
    allowed = settings.allowed_origins
    if allowed is None:
        return True
    origin = request_origin(scope)
    return origin is None or origin in allowed


def cors_options(settings: Settings) -> dict[str, Any]:
    """Starlette ``CORSMiddleware`` options: the listed origins (any origin when unset or ``*``,
    echoed back so that credentials work), every method, the ``Authorization`` header."""
    allowed = settings.allowed_origins
    origins: dict[str, Any] = (
        {"allow_origin_regex": ".*"} if allowed is None else {"allow_origins": sorted(allowed)}
    )
    return {
        **origins,
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type"],
        "expose_headers": ["Retry-After"],
        "max_age": 600,
    }
