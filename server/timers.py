"""The event loop's time as a timer callback must judge it."""

from __future__ import annotations

import asyncio


def time_at_timer(loop: asyncio.AbstractEventLoop, armed_at: float) -> float:
    """``loop.time()`` in a callback armed (``call_at``) for ``armed_at``, never earlier than it.

    uvloop's clock counts whole milliseconds and its timers round their delay to one: a timer can
    run while ``loop.time()`` still reads a hair (up to half a millisecond) before the time it was
    armed for. Judged by that clock, the callback finds nothing due, arms itself again for a delay
    rounded to zero, and runs again and again until the clock ticks (hundreds of times). What was
    armed for ``armed_at`` is due when its timer runs."""
    return max(loop.time(), armed_at)
