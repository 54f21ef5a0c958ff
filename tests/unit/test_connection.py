"""``server.connection.Connection``: the per-connection send queue and its writer task.

A fake ``Channel`` stands for the client: it records what the writer sends and how it closes, and
can stop "reading" (its ``send`` then blocks, as a socket whose peer does not read)."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from server.channel import ChannelClosed
from server.close_codes import (
    CLOSE_1000_NORMAL,
    CLOSE_1013_SEND_QUEUE_FULL,
    CLOSE_4401_TOKEN_EXPIRED,
    CLOSE_4403_ACCESS_REVOKED,
    CloseCode,
)
from server.connection import Connection, Deadlines
from tests.support.wait import wait_until

DEADLINE = 2.0  # seconds any wait on a condition may take before the test fails


class FakeChannel:
    """A ``Channel``: records frames and closes; ``reading.clear()`` makes ``send`` block."""

    path = "/ws/workspaces/ws-test"

    def __init__(self, *, fail_with: BaseException | None = None) -> None:
        self.sent: list[bytes | str] = []
        self.attempted: list[bytes | str] = []  # every send started, finished or not
        self.closed: list[CloseCode] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.fail_with = fail_with

    async def recv(self) -> bytes:
        await asyncio.Event().wait()  # the client never sends anything here
        raise AssertionError("unreachable")

    async def send(self, data: bytes | str) -> None:
        self.attempted.append(data)
        if self.fail_with is not None:
            raise self.fail_with
        await self.reading.wait()
        self.sent.append(data)

    async def close(self, close: CloseCode) -> None:
        self.closed.append(close)


def frames(n: int, start: int = 0) -> list[bytes]:
    return [f"frame-{i}".encode() for i in range(start, start + n)]


async def finish(writer: asyncio.Task[None]) -> None:
    await asyncio.wait_for(writer, DEADLINE)


def start_writer(conn: Connection) -> asyncio.Task[None]:
    """A task that ends when the connection is closed (``Connection.closed``)."""
    return asyncio.create_task(conn.closed())


# -- order ----------------------------------------------------------------------------------------


async def test_frames_are_written_in_the_order_sent_then_closed() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=100)
    mixed: list[bytes | str] = [b"\x00\x00\x01a", "text frame", b"\x01", "second text", b""]
    for data in mixed:
        conn.send(data)
    writer = start_writer(conn)
    conn.close(CLOSE_1000_NORMAL)
    await finish(writer)
    assert channel.sent == mixed
    assert [type(data) for data in channel.sent] == [bytes, str, bytes, str, bytes]
    assert channel.closed == [CLOSE_1000_NORMAL]


async def test_order_is_kept_while_the_writer_drains_concurrently() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=50)
    writer = start_writer(conn)
    expected: list[bytes] = []
    for round_ in range(20):
        batch = frames(30, start=round_ * 30)
        for data in batch:
            conn.send(data)
        expected += batch
        target = len(expected)
        await wait_until(lambda target=target: len(channel.sent) == target, timeout=DEADLINE, interval=0.001)
    conn.close(CLOSE_1000_NORMAL)
    await finish(writer)
    assert channel.sent == expected
    assert len(channel.sent) == 600
    assert channel.closed == [CLOSE_1000_NORMAL]
    assert conn.close_code == CLOSE_1000_NORMAL


async def test_send_never_blocks_nor_creates_a_task() -> None:
    channel = FakeChannel()
    channel.reading.clear()
    conn = Connection(channel, max_queue=1_000)
    writer = start_writer(conn)
    conn.send(b"first")
    await wait_until(lambda: channel.attempted == [b"first"], timeout=DEADLINE)  # writer now stuck
    tasks_before = len(asyncio.all_tasks())
    for data in frames(500):
        assert conn.send(data) is None  # returns at once although the client reads nothing
    assert len(asyncio.all_tasks()) == tasks_before
    assert not conn.is_closing
    channel.reading.set()
    conn.close(CLOSE_1000_NORMAL)
    await finish(writer)
    assert channel.sent == [b"first", *frames(500)]


# -- a client that does not read ------------------------------------------------------------------


async def test_queue_holds_exactly_max_queue_frames_without_closing() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=5)
    for data in frames(5):
        conn.send(data)
    assert conn.close_code is None
    assert not conn.is_closing
    writer = start_writer(conn)
    conn.close(CLOSE_1000_NORMAL)
    await finish(writer)
    assert channel.sent == frames(5)
    assert channel.closed == [CLOSE_1000_NORMAL]


async def test_one_frame_beyond_max_queue_closes_with_1013_and_drops_the_backlog() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=5)
    for data in frames(5):
        conn.send(data)
    conn.send(b"one too many")
    assert conn.is_closing
    assert conn.close_code == CLOSE_1013_SEND_QUEUE_FULL
    assert (conn.close_code.code, conn.close_code.reason) == (
        1013,
        "client is not reading fast enough; reconnect to resync",
    )
    conn.send(b"after the overflow")  # ignored: the connection is closing
    writer = start_writer(conn)
    await finish(writer)
    assert channel.sent == []  # nothing of the backlog is written: close now, resync later
    assert channel.attempted == []
    assert channel.closed == [CLOSE_1013_SEND_QUEUE_FULL]


async def test_client_not_reading_is_cut_off_mid_batch() -> None:
    """The writer took a batch and is stuck writing its first frame; the queue fills up behind
    it. On overflow the rest of the batch is not written: the connection closes with 1013 as soon
    as the stuck frame is through."""
    channel = FakeChannel()
    channel.reading.clear()
    conn = Connection(channel, max_queue=4)
    first_batch = frames(3)
    for data in first_batch:
        conn.send(data)
    writer = start_writer(conn)
    await wait_until(lambda: channel.attempted == [b"frame-0"], timeout=DEADLINE)
    # The batch in flight does not count against the bound: 4 more frames fit.
    for data in frames(4, start=3):
        conn.send(data)
    assert not conn.is_closing
    conn.send(b"overflow")
    assert conn.close_code == CLOSE_1013_SEND_QUEUE_FULL
    assert not writer.done()
    channel.reading.set()  # the client reads again: too late
    await finish(writer)
    assert channel.sent == [b"frame-0"]
    assert channel.attempted == [b"frame-0"]
    assert channel.closed == [CLOSE_1013_SEND_QUEUE_FULL]


async def test_max_queue_of_one() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=1)
    conn.send(b"a")
    assert not conn.is_closing
    conn.send(b"b")
    assert conn.close_code == CLOSE_1013_SEND_QUEUE_FULL
    await finish(start_writer(conn))
    assert (channel.sent, channel.closed) == ([], [CLOSE_1013_SEND_QUEUE_FULL])


# -- closing --------------------------------------------------------------------------------------


async def test_close_sends_what_is_queued_first_and_keeps_the_first_code() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=10)
    conn.send(b"a")
    conn.send(b"b")
    conn.close(CLOSE_4403_ACCESS_REVOKED)
    conn.send(b"after close")  # dropped
    conn.close(CLOSE_1000_NORMAL)  # a second close does not change the code
    assert conn.close_code == CLOSE_4403_ACCESS_REVOKED
    await finish(start_writer(conn))
    assert channel.sent == [b"a", b"b"]
    assert channel.closed == [CLOSE_4403_ACCESS_REVOKED]


async def test_close_wakes_an_idle_writer() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=10)
    writer = start_writer(conn)
    conn.send(b"x")
    await wait_until(lambda: channel.sent == [b"x"], timeout=DEADLINE)
    assert not writer.done()  # idle, waiting for more
    conn.close(CLOSE_1000_NORMAL)
    await finish(writer)
    assert channel.closed == [CLOSE_1000_NORMAL]


def writer_tasks(conn: Connection) -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == f"writer-{conn.id}"]


async def test_an_idle_connection_holds_no_writer_task() -> None:
    """The writer runs only while frames wait (an idle connection costs no task), and a frame
    queued after it ended starts another, in order."""
    channel = FakeChannel()
    channel.reading.clear()  # the first frames must wait
    conn = Connection(channel, max_queue=10)
    assert writer_tasks(conn) == []
    conn.send(b"a")
    conn.send(b"b")
    assert len(writer_tasks(conn)) == 1
    channel.reading.set()
    await wait_until(lambda: channel.sent == [b"a", b"b"] and not writer_tasks(conn), timeout=DEADLINE)
    channel.reading.clear()
    conn.send(b"c")
    assert len(writer_tasks(conn)) == 1
    channel.reading.set()
    await wait_until(lambda: channel.sent == [b"a", b"b", b"c"] and not writer_tasks(conn), timeout=DEADLINE)
    closed = start_writer(conn)
    await asyncio.sleep(0)
    assert not closed.done()  # nothing started the close yet
    conn.close(CLOSE_1000_NORMAL)
    await finish(closed)
    assert channel.closed == [CLOSE_1000_NORMAL]
    assert writer_tasks(conn) == []


@pytest.mark.parametrize("failure", [ChannelClosed(1006), ConnectionResetError("peer reset")])
async def test_peer_gone_mid_send_ends_the_writer_quietly(failure: BaseException) -> None:
    channel = FakeChannel(fail_with=failure)
    conn = Connection(channel, max_queue=10)
    conn.send(b"a")
    conn.send(b"b")
    writer = start_writer(conn)
    await finish(writer)
    assert writer.exception() is None
    assert channel.attempted == [b"a"]  # it stops at the first failed send
    assert channel.sent == []
    assert channel.closed == []  # the reader side sees the disconnect and cleans up


# -- close_at (token expiry) ----------------------------------------------------------------------


async def test_close_at_schedules_the_close_at_the_epoch_deadline() -> None:
    conn = Connection(FakeChannel(), max_queue=10)
    loop = asyncio.get_running_loop()
    conn.close_at(time.time() + 3600, CLOSE_4401_TOKEN_EXPIRED)
    assert conn.expiry is not None
    assert conn.expiry.when() - loop.time() == pytest.approx(3600, abs=1.0)
    assert not conn.is_closing
    conn.close_at(None)
    assert conn.expiry is None


async def test_close_at_replaces_and_cancels_the_previous_deadline() -> None:
    conn = Connection(FakeChannel(), max_queue=10)
    loop = asyncio.get_running_loop()
    conn.close_at(time.time() + 3600, CLOSE_4401_TOKEN_EXPIRED)
    first = conn.expiry
    assert first is not None
    conn.close_at(time.time() + 7200, CLOSE_4401_TOKEN_EXPIRED)
    assert first.cancelled()
    assert conn.expiry is not None and conn.expiry is not first
    assert conn.expiry.when() - loop.time() == pytest.approx(7200, abs=1.0)
    second = conn.expiry
    conn.close_at(time.time() + 10, None)  # a deadline without a code only cancels
    assert second.cancelled()
    assert conn.expiry is None


async def test_cancelled_deadline_does_not_close() -> None:
    conn = Connection(FakeChannel(), max_queue=10)
    conn.close_at(time.time() - 1, CLOSE_4401_TOKEN_EXPIRED)  # due on the next loop turn
    handle = conn.expiry
    assert handle is not None
    conn.close_at(None)  # cancelled in the same turn: it never runs
    assert handle.cancelled()
    assert conn.close_code is None


async def test_past_deadline_closes_with_4401_after_sending_what_is_queued() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=10)
    writer = start_writer(conn)
    conn.send(b"before expiry")
    conn.close_at(time.time() - 5, CLOSE_4401_TOKEN_EXPIRED)
    assert conn.close_code is None  # a timer, not an immediate close
    await finish(writer)
    assert conn.close_code == CLOSE_4401_TOKEN_EXPIRED
    assert (conn.close_code.code, conn.close_code.reason) == (4401, "token expired")
    assert channel.sent == [b"before expiry"]
    assert channel.closed == [CLOSE_4401_TOKEN_EXPIRED]


async def test_near_deadline_closes_at_that_moment_not_before() -> None:
    channel = FakeChannel()
    conn = Connection(channel, max_queue=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    conn.close_at(time.time() + 0.1, CLOSE_4401_TOKEN_EXPIRED)
    writer = start_writer(conn)
    await finish(writer)  # ends only when the expiry closes the connection
    elapsed = loop.time() - started
    assert elapsed >= 0.09
    assert channel.closed == [CLOSE_4401_TOKEN_EXPIRED]


async def test_many_deadlines_share_one_timer_close_in_order_and_forget_the_cancelled() -> None:
    """Token expiries of every connection on a loop are one heap with one timer: each closes at its
    own deadline, a cancelled one never does, and cancelled entries do not pile up."""
    loop = asyncio.get_running_loop()
    conns = [Connection(FakeChannel(), max_queue=10) for _ in range(200)]
    for n, conn in enumerate(conns):
        conn.close_at(time.time() + 3600 + n, CLOSE_4401_TOKEN_EXPIRED)
    for conn in conns[:150]:
        conn.close_at(None)
    deadlines = Deadlines.of(loop)
    assert deadlines.live == 50
    soon = [Connection(FakeChannel(), max_queue=10) for _ in range(3)]
    for n, conn in enumerate(reversed(soon)):  # added latest-first, due earliest-first
        conn.close_at(time.time() + 0.05 * (n + 1), CLOSE_4401_TOKEN_EXPIRED)
    assert len(deadlines._heap) <= 2 * deadlines.live  # the cancelled were dropped
    soon[1].close_at(None)
    await wait_until(lambda: soon[0].is_closing and soon[2].is_closing, timeout=DEADLINE)
    assert soon[1].close_code is None
    assert not any(conn.is_closing for conn in conns)
    assert deadlines.live == 50


def test_on_uvloops_millisecond_clock_a_deadline_closes_at_its_timer_not_in_a_spin() -> None:
    """A deadline's timer closes its connection when it runs: on uvloop, whose clock counts whole
    milliseconds, not after running again and again (with a delay rounded to zero) because the
    clock still read a hair before the deadline (``timers.time_at_timer``)."""

    class Counted(Deadlines):
        runs = 0

        def _expire(self, *armed_at: float) -> None:
            self.runs += 1
            super()._expire(*armed_at)

    async def expiries() -> list[int]:
        loop = asyncio.get_running_loop()
        runs = []
        for n in range(100):
            deadlines = Counted(loop)
            conn = Connection(FakeChannel(), max_queue=10)
            deadlines.add(loop.time() + 0.01 + n % 7 / 3000, conn, CLOSE_4401_TOKEN_EXPIRED)
            await wait_until(lambda: conn.is_closing, timeout=DEADLINE)  # noqa: B023 - awaited here
            runs.append(deadlines.runs)
            await asyncio.sleep(0.0013)
        return runs

    runs = uvloop.run(expiries())
    assert max(runs) == 1, runs


class BrokenChannel(FakeChannel):
    """A channel whose ``send`` fails with a fault of the server's own (not a disconnect)."""

    async def send(self, data: bytes | str) -> None:
        raise RuntimeError(f"an unexpected failure while writing {len(data)} bytes")


async def test_a_writer_fault_that_is_not_a_disconnect_reaches_whoever_waits_for_the_close() -> None:
    conn = Connection(BrokenChannel(), max_queue=10)
    conn.send(b"x")
    conn.close(CLOSE_1000_NORMAL)
    with pytest.raises(RuntimeError, match="unexpected failure"):
        await asyncio.wait_for(conn.closed(), DEADLINE)
    with pytest.raises(RuntimeError):  # and to a later waiter too
        await asyncio.wait_for(conn.closed(), DEADLINE)


async def test_cancelling_the_wait_for_the_close_cancels_a_stuck_writer() -> None:
    channel = FakeChannel()
    channel.reading.clear()  # the writer blocks in its first send
    conn = Connection(channel, max_queue=10)
    conn.send(b"x")
    conn.close(CLOSE_1000_NORMAL)
    waiting = asyncio.create_task(conn.closed())
    await wait_until(lambda: channel.attempted == [b"x"], timeout=DEADLINE)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await wait_until(lambda: not writer_tasks(conn), timeout=DEADLINE)
