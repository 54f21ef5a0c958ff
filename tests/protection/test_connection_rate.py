"""Per-connection rates (``server.limits.ConnectionRate``), counted by the ``limits`` library in
fixed one-second windows: what is refused, what waits, and when a client counts as persisting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from prometheus_client import REGISTRY

from server.channel import FrameRejected
from server.limits import ConnectionRate


async def test_messages_over_the_rate_are_refused_with_the_wait_until_the_next_window() -> None:
    rate = ConnectionRate(messages=3, size=0, close_after=10)
    assert [rate.try_take(10) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rate.try_take(10)
    assert 0 < wait <= 1.0
    assert rate.over_since is not None and not rate.persisting
    await asyncio.sleep(wait)
    assert rate.try_take(10) == 0.0  # a new window


async def test_bytes_count_each_frame_and_a_frame_larger_than_the_rate_takes_a_whole_window() -> None:
    rate = ConnectionRate(messages=0, size=1_000, close_after=10)
    assert rate.try_take(600) == 0.0
    assert rate.try_take(600) > 0  # 1,200 bytes in one window
    other = ConnectionRate(messages=0, size=1_000, close_after=10)
    assert other.try_take(50_000) == 0.0  # alone in its window: admitted, as one second's worth
    assert other.try_take(1) > 0


async def test_connections_are_counted_apart() -> None:
    first, second = (ConnectionRate(messages=1, size=0, close_after=10) for _ in range(2))
    assert first.try_take(1) == 0.0
    assert second.try_take(1) == 0.0
    assert first.try_take(1) > 0


async def test_pace_waits_for_the_allowance_and_a_client_that_stays_over_is_rejected() -> None:
    rate = ConnectionRate(messages=2, size=0, close_after=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3):  # the third waits for the next window
        await rate.pace(1)
    assert loop.time() - start > 0

    async def flood() -> None:
        for _ in range(20):  # keeps sending past close_after
            await rate.pace(1)

    with pytest.raises(FrameRejected) as refused:
        await flood()
    assert refused.value.close.code == 4429
    assert "over 2 messages per second for 0.5 s" in refused.value.close.reason


async def test_a_client_that_keeps_within_its_rate_for_two_seconds_is_no_longer_over() -> None:
    rate = ConnectionRate(messages=1, size=0, close_after=10)
    rate.try_take(1)
    await asyncio.sleep(rate.try_take(1))
    assert rate.over_since is not None
    await asyncio.sleep(2.05)
    assert rate.try_take(1) == 0.0
    assert rate.over_since is None


async def test_each_refusal_is_counted_in_the_rate_limited_metric() -> None:
    def counted() -> float:
        labels = {"limit": "connection_messages", "transport": "events"}
        return REGISTRY.get_sample_value("collab_rate_limited_total", labels) or 0.0

    before = counted()
    rate = ConnectionRate(messages=1, size=0, close_after=10, transport="events")
    rate.try_take(1)
    rate.try_take(1)
    rate.try_take(1)
    assert counted() == before + 2


def time_refusals() -> float:
    labels = {"limit": "connection_time", "transport": "websocket"}
    return REGISTRY.get_sample_value("collab_rate_limited_total", labels) or 0.0


async def elapsed(awaitable: Awaitable[None]) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await awaitable
    return loop.time() - started


async def test_frames_wait_once_their_server_time_is_spent_and_a_client_that_stays_over_is_rejected() -> None:
    rate = ConnectionRate(messages=0, size=0, close_after=1.5, time_ms=5)
    refused_before = time_refusals()
    await rate.pace(1)
    rate.charge(0.004)  # within 5 ms a second
    assert await elapsed(rate.pace(1)) < 0.5
    rate.charge(0.001)  # exactly the allowance: still within it
    assert await elapsed(rate.pace(1)) < 0.5
    assert time_refusals() == refused_before
    rate.charge(0.002)  # 7 ms: held until the next window pays the rest
    assert await elapsed(rate.pace(1)) > 0
    assert time_refusals() > refused_before

    async def costly() -> None:
        for _ in range(20):
            await rate.pace(1)
            rate.charge(0.002)  # three of these a second: more than its allowance

    with pytest.raises(FrameRejected) as refused:
        await costly()
    assert refused.value.close.code == 4429
    assert "over 5 ms of server time per second for 1.5 s" in refused.value.close.reason


async def test_the_reason_names_the_rate_gone_over_and_time_is_counted_only_with_an_allowance() -> None:
    rate = ConnectionRate(messages=1, size=1_000_000, close_after=0.2, time_ms=100)
    assert rate.description == (
        "1 messages per second and 1000000 bytes per second and 100 ms of server time per second"
    )

    async def flood() -> None:
        for _ in range(100):
            await rate.pace(1)

    with pytest.raises(FrameRejected) as refused:
        await flood()
    assert "over 1 messages per second for 0.2 s" in refused.value.close.reason
    untimed = ConnectionRate(messages=10, size=0, close_after=10)
    untimed.charge(5.0)  # no time allowance: nothing counted, nothing held
    assert await elapsed(untimed.pace(1)) < 0.5


async def test_time_and_bytes_are_counted_apart_even_with_the_same_allowance() -> None:
    rate = ConnectionRate(messages=0, size=200_000, close_after=10, time_ms=200)
    await rate.pace(150_000)
    rate.charge(0.06)  # 60,000 us: the byte window's 50,000 left are not the time window's
    assert await elapsed(rate.pace(10)) < 0.5


async def test_charges_that_are_not_a_positive_time_are_ignored() -> None:
    rate = ConnectionRate(messages=0, size=0, close_after=10, time_ms=5)
    for seconds in (-10.0, float("nan"), float("inf"), float("-inf"), 0.0):
        rate.charge(seconds)
    rate.charge(0.006)  # no credit from the negative charge: 1 ms over
    assert await elapsed(rate.pace(1)) > 0.001


async def test_a_message_that_took_longer_than_its_window_leaves_a_debt_paid_before_the_next_frame() -> None:
    rate = ConnectionRate(messages=0, size=0, close_after=10, time_ms=20)
    await rate.pace(1)
    rate.charge(0.05)  # 50 ms: this window's 20, then a debt of 30
    assert await elapsed(rate.pace(1)) > 1.0  # the next window whole and 10 ms of the one after
    rate.charge(0.005)  # 10 ms of that window are left
    assert await elapsed(rate.pace(1)) < 0.5


async def test_a_debt_of_more_than_close_after_seconds_allowance_closes_at_once() -> None:
    rate = ConnectionRate(messages=0, size=0, close_after=2, time_ms=100)
    await rate.pace(1)
    rate.charge(0.35)  # 250 ms owed: more than 2 s x 100 ms
    with pytest.raises(FrameRejected) as refused:
        await elapsed(rate.pace(1))
    assert refused.value.close.code == 4429
    assert "over 100 ms of server time per second: 250 ms of server time owed" in refused.value.close.reason


async def test_a_client_held_now_and_then_but_within_its_allowance_on_average_is_not_closed() -> None:
    # A costly update now and then with a small frame after it (an update, then its awareness):
    # held each time, less than two seconds apart, for longer than close_after, at about 60 %.
    rate = ConnectionRate(messages=0, size=0, close_after=1, time_ms=100)
    for _ in range(3):
        await rate.pace(1)
        rate.charge(0.101)
        await rate.pace(1)  # held for the 1 ms over
        rate.charge(0.001)
        await asyncio.sleep(0.5)
    await rate.pace(1)


async def test_small_charges_add_up_before_they_are_counted() -> None:
    rate = ConnectionRate(messages=0, size=0, close_after=10, time_ms=1)
    await rate.pace(1)
    rate.charge(0.0006)  # under a millisecond: not counted yet
    assert await elapsed(rate.pace(1)) < 0.5
    rate.charge(0.0006)  # 1.2 ms in all: the window's 1 ms, and a debt of 0.2
    assert await elapsed(rate.pace(1)) > 0.001
