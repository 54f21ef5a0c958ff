"""The Redis connections of one instance, whether Redis answers, and the broker's tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .. import metrics

log = logging.getLogger("server.broker")

FAILURES = (RedisError, OSError)
MAX_BACKOFF = 2.0  # seconds between attempts to reach Redis again
READER_TIMEOUT = 20.0  # longer than the blocking stream read and the pub/sub ping
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0


# The clients keep redis-py's default ``decode_responses=False``, so every value in a reply is
# bytes; redis-py annotates replies for both modes. These state the shapes the broker reads.
StreamEntry = tuple[bytes, dict[bytes, bytes]]


def stream_entries(reply: object) -> list[StreamEntry]:
    """XRANGE's reply: ``[(entry id, {field: value})]``."""
    return cast(list[StreamEntry], reply or [])


def read_streams(reply: object) -> list[tuple[bytes, list[StreamEntry]]]:
    """XREAD's reply: ``[(stream key, entries)]``; empty when the blocking read timed out."""
    return cast(list[tuple[bytes, list[StreamEntry]]], reply or [])


def byte_strings(reply: object) -> list[bytes]:
    """The members of a set or sorted set, or a hash's fields (SMEMBERS, ZRANGEBYSCORE, HKEYS)."""
    return list(cast("list[bytes] | set[bytes]", reply or []))


def hash_fields(reply: object) -> dict[bytes, bytes]:
    """HGETALL's reply."""
    return cast(dict[bytes, bytes], reply or {})


class RedisLink:
    """Two connections: ``commands`` (publishing, presence, heartbeats) and ``reader`` (the
    blocking stream read and pub/sub, without silent retries: a lost connection must be seen,
    to catch up after it).

    Arguments:
        url: the Redis URL.
        on_restored: called when Redis answers again after a failure.
    """

    def __init__(self, url: str, *, on_restored: Callable[[], None]) -> None:
        self.commands: Redis = Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT
        )
        self.reader: Redis = Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=READER_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self.up = True
        self.last_error: str | None = None
        self._on_restored = on_restored
        self._tasks: set[asyncio.Task[None]] = set()

    def ok(self) -> None:
        """Redis answered."""
        if not self.up:
            self.up = True
            log.warning("Redis is reachable again: catching up with the other instances")
            self._on_restored()

    def failed(self, exc: BaseException) -> None:
        """Redis did not answer: this instance serves its own clients alone meanwhile."""
        metrics.REDIS_ERRORS.inc()
        self.last_error = f"{exc.__class__.__name__}: {exc}"
        if self.up:
            self.up = False
            log.error("Redis is unreachable, serving this instance's clients alone: %s", self.last_error)

    async def wait_after(self, exc: BaseException, delay: float) -> float:
        """Note a failure, wait ``delay`` seconds, and return the next (doubled, bounded) delay."""
        self.failed(exc)
        await asyncio.sleep(delay)
        return min(delay * 2, MAX_BACKOFF)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coroutine`` as one of the broker's tasks (cancelled by ``close``)."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.reader.aclose()
        await self.commands.aclose()
