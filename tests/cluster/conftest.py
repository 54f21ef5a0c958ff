"""Several ``python -m server`` processes sharing the run's PostgreSQL database and Redis.

Each test gets its own Redis key prefix (deleted afterwards) and its own workspace ids, so the
instances of one test never see another test's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.support.auth import SECRET
from tests.support.server import ServerProcess, start_process


class StartCluster:
    """``await start_cluster(3, **env)``: three more instances sharing the test's key prefix."""

    def __init__(self, start: Callable[..., Awaitable[list[ServerProcess]]], prefix: str) -> None:
        self._start = start
        self.prefix = prefix

    async def __call__(self, count: int, **env: str) -> list[ServerProcess]:
        return await self._start(count, **env)


# Short enough for the tests to see a dead instance handled, long enough for a noisy machine.
CLUSTER_ENV = {
    "INSTANCE_TIMEOUT": "2",
    "STREAM_RETENTION": "60",
    "SYNC_CHECK_INTERVAL": "1",
    "LOG_LEVEL": "INFO",
}


async def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def start_cluster(pg_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[StartCluster]:
    """``await start_cluster(3)``: three instances on ephemeral ports, stopped after the test.
    Every call of one test shares a key prefix; keyword arguments are extra environment."""
    started: list[ServerProcess] = []
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    redis_urls = {redis_url}

    async def start(count: int, *, redis_url: str = redis_url, **env: str) -> list[ServerProcess]:
        redis_urls.add(redis_url)
        full_env = {
            "DATABASE_URL": pg_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "JWT_SECRET": SECRET,
            **CLUSTER_ENV,
            **env,
        }
        first = len(started)
        results = await asyncio.gather(
            *(start_process(full_env, tmp_path / f"instance-{first + i}.log") for i in range(count)),
            return_exceptions=True,
        )
        started.extend(r for r in results if isinstance(r, ServerProcess))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, ServerProcess)]

    try:
        yield StartCluster(start, prefix)
    finally:
        await asyncio.gather(*(instance.stop() for instance in started))
        for url in redis_urls:
            with contextlib.suppress(redis.RedisError, OSError):  # a test's own Redis, already stopped
                await delete_prefix(url, prefix)
