"""Waiting on a condition with a deadline, instead of sleeping and hoping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true; fail with ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}"
            )
        await asyncio.sleep(interval)
