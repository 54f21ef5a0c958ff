"""One client connection: a bounded outbound queue drained by a single writer task."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from .channel import Channel, ChannelClosed
from .close_codes import CLOSE_1013_SEND_QUEUE_FULL, CloseCode

log = logging.getLogger(__name__)

_ids = itertools.count(1)


class Connection:
    """Queues frames for one client and writes them in order from one task.

    ``send`` never blocks and never creates a task: when nothing is queued or being written and the
    channel can write at once (``send_now``, offered by ``AsgiChannel``), the frame goes straight to
    the transport; otherwise it is queued and the writer woken. A client whose queue reaches
    ``max_queue`` frames is closed with 1013: it can reconnect and resync, which costs less than
    buffering without bound.
    """

    __slots__ = (
        "_loop",
        "_max_queue",
        "_overflowed",
        "_queue",
        "_send_now",
        "_wakeup",
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

    def __init__(self, channel: Channel, *, max_queue: int, user: Any = None, can_write: bool = True) -> None:
        self.id = next(_ids)
        self.channel = channel
        self.user = user
        self.can_write = can_write
        self.expiry: asyncio.TimerHandle | None = None
        self.awareness_ids: set[int] | None = None  # created when the client announces presence
        self._loop = asyncio.get_running_loop()
        self.last_sent = self._loop.time()
        self.close_code: CloseCode | None = None
        self._queue: list[bytes | str] = []
        self._overflowed = False
        self._max_queue = max_queue
        self._wakeup: asyncio.Future[None] | None = None
        self._writing = False  # the writer holds a batch it has not finished sending
        self._send_now = getattr(channel, "send_now", None)

    @property
    def is_closing(self) -> bool:
        return self.close_code is not None

    def send(self, data: bytes | str) -> None:
        if self.close_code is not None:
            return
        if not self._queue and not self._writing and self._send_now is not None and self._send_now(data):
            self.last_sent = self._loop.time()
            return
        if len(self._queue) >= self._max_queue:
            log.warning("connection %s: send queue full (%d frames), closing", self.id, self._max_queue)
            self._queue = []
            self._overflowed = True
            self.close(CLOSE_1013_SEND_QUEUE_FULL)
            return
        self._queue.append(data)
        self._wake()

    def close(self, code: CloseCode) -> None:
        """Ask the writer to send what is queued (unless the queue overflowed), then close."""
        if self.close_code is None:
            self.close_code = code
            self._wake()

    def close_at(self, deadline: float | None, code: CloseCode | None = None) -> None:
        """Close with ``code`` at ``deadline`` (epoch seconds), as when a token expires; ``None``
        cancels a pending deadline."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if deadline is not None and code is not None:
            when = self._loop.time() + (deadline - time.time())
            self.expiry = self._loop.call_at(when, self.close, code)

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_writer(self) -> None:
        """Write queued frames until closed. Runs as the connection's one writer task."""
        channel = self.channel
        try:
            while True:
                while self._queue:
                    # Take everything queued at once: one swap instead of a pop per frame.
                    batch, self._queue = self._queue, []
                    self._writing = True
                    for data in batch:
                        if self._overflowed:
                            break  # cut off: close now rather than after the backlog
                        await channel.send(data)
                    self._writing = False
                    self.last_sent = self._loop.time()
                if self.close_code is not None:
                    await channel.close(self.close_code)
                    return
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
        except (ChannelClosed, OSError) as exc:
            # The peer vanished mid-send; the reader sees the disconnect and cleans up.
            log.debug("connection %s: send failed: %r", self.id, exc)
