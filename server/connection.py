"""One client connection: a bounded outbound queue, drained by one writer task while it holds frames."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from typing import Any, ClassVar

from .channel import Channel, ChannelClosed
from .close_codes import CLOSE_1013_SEND_QUEUE_FULL, CloseCode
from .timers import time_at_timer
from .ws_frames import Framed

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class Deadline:
    """A connection to be closed with ``code`` at ``at`` (the loop's clock), until cancelled (the
    interface of the ``asyncio.TimerHandle`` it stands in for: ``when``, ``cancel``, ``cancelled``)."""

    __slots__ = ("at", "code", "conn", "owner")

    def __init__(self, at: float, conn: Connection, code: CloseCode, owner: Deadlines) -> None:
        self.at = at
        self.conn: Connection | None = conn
        self.code = code
        self.owner = owner

    def __lt__(self, other: Deadline) -> bool:
        return self.at < other.at

    def when(self) -> float:
        return self.at

    def cancelled(self) -> bool:
        return self.conn is None

    def cancel(self) -> None:
        if self.conn is not None:
            self.conn = None
            self.owner.live -= 1


class Deadlines:
    """The close deadlines (token expiries) of one event loop's connections: one heap and one
    timer for all of them, instead of a timer handle per connection (about 0.6 KB each).
    Cancelled entries stay until they come up, or until they are more than half the heap."""

    _current: ClassVar[Deadlines | None] = None  # the last loop's (one loop in a server process)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[Deadline] = []
        self._timer: asyncio.TimerHandle | None = None
        self.live = 0  # deadlines in the heap not cancelled

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Deadlines:
        """The deadlines of ``loop``: those of the last loop asked for, or new ones. (A process
        with several loops, such as tests running servers in threads, may get several for one
        loop; each keeps its own deadlines and timer, and only the last loop is held here.)"""
        deadlines = cls._current
        if deadlines is None or deadlines._loop is not loop:
            deadlines = cls._current = cls(loop)
        return deadlines

    def add(self, when: float, conn: Connection, code: CloseCode) -> Deadline:
        """Close ``conn`` with ``code`` at ``when`` (``loop.time()`` seconds), unless the returned
        deadline is cancelled first."""
        deadline = Deadline(when, conn, code, self)
        self.live += 1
        if len(self._heap) > 64 and len(self._heap) > 2 * self.live:
            self._heap = [d for d in self._heap if d.conn is not None]
            heapq.heapify(self._heap)
        heapq.heappush(self._heap, deadline)
        if self._heap[0] is deadline:
            self._schedule()
        return deadline

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._heap:
            at = self._heap[0].at
            self._timer = self._loop.call_at(at, self._expire, at)
        else:
            self._timer = None

    def _expire(self, armed_at: float) -> None:
        now = time_at_timer(self._loop, armed_at)
        heap = self._heap
        while heap and heap[0].at <= now:
            deadline = heapq.heappop(heap)
            conn = deadline.conn
            if conn is not None:
                deadline.cancel()
                conn.close(deadline.code)
        self._timer = None
        self._schedule()


class Connection:
    """Queues frames for one client and writes them in order, from one task at a time.

    ``send`` never blocks: when nothing is queued or being written and the channel can write at
    once (``send_now``, offered by ``AsgiChannel``), the frame goes straight to the transport;
    otherwise it is queued and a writer task started, which ends once the queue is written (an idle
    connection holds no task). ``close`` has the queue written, then the channel closed; ``closed``
    waits for that. A client whose queue holds
    ``max_queue`` frames, or ``max_queue_bytes`` bytes, when another frame comes is closed with
    1013: it can reconnect and resync, which costs less than buffering without bound. (Bytes count
    until written; the queue never holds more than ``max_queue_bytes`` plus one frame, so a frame of
    any size, such as a large document's state, reaches a client that reads.)
    """

    __slots__ = (
        "_closed_waiter",
        "_drain_waiters",
        "_failure",
        "_loop",
        "_max_queue",
        "_max_queue_bytes",
        "_overflowed",
        "_queue",
        "_queued_bytes",
        "_send_now",
        "_writer",
        "_writer_done",
        "_writing",
        "awareness_ids",
        "can_write",
        "channel",
        "close_code",
        "expiry",
        "id",
        "last_sent",
        "user",
    )

    def __init__(
        self,
        channel: Channel,
        *,
        max_queue: int,
        max_queue_bytes: int = 16 * 1024 * 1024,
        user: Any = None,
        can_write: bool = True,
    ) -> None:
        self.id = next(_ids)
        self.channel = channel
        self.user = user
        self.can_write = can_write
        self.expiry: Deadline | None = None
        self.awareness_ids: set[int] | None = None  # created when the client announces presence
        self._loop = asyncio.get_running_loop()
        self.last_sent = self._loop.time()
        self.close_code: CloseCode | None = None
        self._queue: list[bytes | str | Framed] = []
        self._overflowed = False
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self._writer: asyncio.Task[None] | None = None  # while frames or a close are to be written
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._failure: Exception | None = None  # what the writer raised, other than a disconnect
        self._writer_done = False  # closed, or the channel failed: nothing more is written
        self._writing = False  # the writer holds a batch it has not finished sending
        self._send_now = getattr(channel, "send_now", None)

    @property
    def is_closing(self) -> bool:
        return self.close_code is not None

    @property
    def max_queue(self) -> int:
        """Frames that may wait to be written before the connection is closed with 1013."""
        return self._max_queue

    async def drained(self) -> None:
        """Wait until every frame queued so far is written (or the connection is closing)."""
        if self.close_code is not None or self._writer_done or (not self._queue and not self._writing):
            return
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        await waiter

    async def closed(self) -> None:
        """Wait until the connection is closed: ``close`` was called and the queue written (or
        dropped) and the channel closed, or the channel failed. Raises what the writer raised
        if it failed otherwise than by the peer going away. Cancelled, it cancels the writer too
        (the connection is being torn down)."""
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
            if self._writer_done:
                self._settle(self._closed_waiter)
        try:
            await asyncio.shield(self._closed_waiter)
        except asyncio.CancelledError:
            if self._writer is not None:
                self._writer.cancel()
            raise

    def _settle(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():
            return
        if self._failure is not None:
            waiter.set_exception(self._failure)
        else:
            waiter.set_result(None)

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def send(self, data: bytes | str | Framed) -> None:
        if self.close_code is not None:
            return
        if not self._queue and not self._writing and self._send_now is not None and self._send_now(data):
            self.last_sent = self._loop.time()
            return
        size = len(data)
        if len(self._queue) >= self._max_queue or self._queued_bytes >= self._max_queue_bytes:
            log.warning(
                "connection %s: send queue full (%d frames, %d bytes), closing",
                self.id,
                len(self._queue),
                self._queued_bytes,
            )
            self._queue = []
            self._queued_bytes = 0
            self._overflowed = True
            self.close(CLOSE_1013_SEND_QUEUE_FULL)
            return
        self._queue.append(data)
        self._queued_bytes += size
        self._wake()

    def close(self, code: CloseCode) -> None:
        """Ask the writer to send what is queued (unless the queue overflowed), then close."""
        if self.close_code is None:
            self.close_code = code
            self._wake()
            self._drained()

    def close_at(self, deadline: float | None, code: CloseCode | None = None) -> None:
        """Close with ``code`` at ``deadline`` (epoch seconds), as when a token expires; ``None``
        cancels a pending deadline."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if deadline is not None and code is not None:
            when = self._loop.time() + (deadline - time.time())
            self.expiry = Deadlines.of(self._loop).add(when, self, code)

    def _wake(self) -> None:
        """Start the writer, unless one is running (it finds the new frame or the close before
        it ends) or the connection is past writing."""
        if self._writer is None and not self._writer_done:
            self._writer = self._loop.create_task(self._write(), name=f"writer-{self.id}")

    async def _write(self) -> None:
        """Write the queued frames; then close the channel if the connection is closing. Ends when
        there is nothing left to write."""
        channel = self.channel
        finished = True  # unless it ends idle
        try:
            while self._queue:
                # Take everything queued at once: one swap instead of a pop per frame.
                batch, self._queue = self._queue, []
                self._writing = True
                for data in batch:
                    if self._overflowed:
                        break  # cut off: close now rather than after the backlog
                    await channel.send(data)
                    self._queued_bytes -= len(data)  # counted until written
                self._writing = False
                self.last_sent = self._loop.time()
            if self.close_code is None:
                finished = False  # idle: the next frame, or the close, starts another writer
                return
            await channel.close(self.close_code)
        except (ChannelClosed, OSError) as exc:
            # The peer vanished mid-send; the reader sees the disconnect and cleans up.
            log.debug("connection %s: send failed: %r", self.id, exc)
        except Exception as exc:  # noqa: BLE001 - a fault of the server's, raised again by ``closed()``
            self._failure = exc
        finally:
            self._writer = None
            self._writing = False
            if finished:
                self._writer_done = True
                if self._closed_waiter is not None:
                    self._settle(self._closed_waiter)
            self._drained()
