"""``server.websocket``: the frames the server writes directly are the ones ``websockets`` itself
would write (unmasked, final, binary or text), at every length encoding; ``Inbox`` and ``Gate``
behave as the ``asyncio.Queue`` and ``asyncio.Event`` they stand in for, ``DelayQueue`` as timers;
a large read of small frames is parsed a part at a time."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from server.websocket import (
    BUSY_WRITES,
    FLUSH_INTERVAL,
    FRAMES_EXTENSION,
    PARSE_BYTES,
    READ_QUEUE_FRAMES,
    CollabWebSocketProtocol,
    DelayQueue,
    Flushes,
    Gate,
    Inbox,
    text_frame,
)
from server.ws_frames import binary_frame
from tests.support.rawframes import client_frame
from tests.support.wait import wait_until


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_a_binary_frame_is_what_websockets_serialises(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame(payload) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_a_text_frame_is_what_websockets_serialises(size: int) -> None:
    text = ("é☃😀" * (size // 3 + 1))[:size]  # characters of 2, 3 and 4 bytes in UTF-8
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


async def test_the_inbox_hands_items_out_in_order_and_wakes_a_waiting_reader() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty() and inbox.qsize() == 0
    for n in range(5):
        inbox.put_nowait(n)
    assert [await inbox.get(), await inbox.get()] == [0, 1]
    inbox.put_nowait(5)
    assert inbox.qsize() == 4
    assert [await inbox.get() for _ in range(4)] == [2, 3, 4, 5]
    assert inbox.empty()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(6)
    assert await asyncio.wait_for(reader, 2) == 6


async def test_the_inbox_refuses_a_second_waiting_reader_and_survives_a_cancelled_one() -> None:
    inbox: Inbox[str] = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await inbox.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    inbox.put_nowait("after")
    assert await asyncio.wait_for(inbox.get(), 2) == "after"


async def test_the_gate_holds_waiters_while_closed_and_releases_them_all() -> None:
    gate = Gate()
    assert gate.is_set() and await gate.wait()
    gate.clear()
    waiters = [asyncio.create_task(gate.wait()) for _ in range(3)]
    cancelled = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    assert not any(w.done() for w in waiters) and not gate.is_set()
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 2) == [True, True, True]


async def test_the_inbox_does_not_grow_while_its_reader_keeps_one_item_behind() -> None:
    inbox: Inbox[int] = Inbox()
    inbox.put_nowait(0)
    for n in range(1, 10_000):
        inbox.put_nowait(n)
        assert await inbox.get() == n - 1
    assert inbox.qsize() == 1
    assert len(inbox._items) <= 64  # taken slots are dropped, not kept as None


async def test_the_delay_queue_calls_in_order_after_its_delay_and_skips_cancelled_calls() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    done = loop.create_future()

    def fire(target: str) -> None:
        fired.append((target, loop.time()))
        if target == "last":
            done.set_result(None)

    queue = DelayQueue(0.05, fire)
    added = {name: (queue.add(name), loop.time()) for name in ("a", "b", "c")}
    added["b"][0].cancel()
    await asyncio.sleep(0)  # a later turn: "last" is due after the others
    queue.add("last")
    await asyncio.wait_for(done, 5)
    assert [name for name, _ in fired] == ["a", "c", "last"]
    for name, at in fired[:2]:
        assert at >= added[name][1] + 0.05


async def test_a_failing_delay_queue_call_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    fired: list[str] = []
    done = loop.create_future()

    def fire(target: str) -> None:
        if target == "bad":
            raise ValueError("bad target")
        fired.append(target)
        done.set_result(None)

    queue = DelayQueue(0.01, fire)
    queue.add("bad")
    queue.add("good")
    try:
        await asyncio.wait_for(done, 5)
    finally:
        loop.set_exception_handler(None)
    assert fired == ["good"]
    assert [str(exc) for exc in reported] == ["bad target"]


class FlushedAt:
    """Stands for a ``FrameWriter`` with frames pending: records when it was flushed (loop time);
    ``fail``: raises."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fail: bool = False) -> None:
        self.loop, self.fail = loop, fail
        self.at: float | None = None

    def flush(self) -> bool:
        self.at = self.loop.time()
        if self.fail:
            raise ValueError("flush failed")
        return True


async def test_a_quiet_loop_flushes_every_connection_written_to_at_the_end_of_the_turn() -> None:
    loop = asyncio.get_running_loop()
    flushes = Flushes()
    writers = [FlushedAt(loop) for _ in range(3)]
    for writer in writers:
        flushes.add(writer, loop)  # type: ignore[arg-type]
    assert all(writer.at is None for writer in writers)  # not while the turn goes on
    await asyncio.sleep(0)
    assert all(writer.at is not None for writer in writers)


async def test_a_busy_loop_flushes_once_per_interval_and_a_quiet_one_at_the_end_of_the_turn_again() -> None:
    """A round that wrote to ``BUSY_WRITES`` connections makes the loop busy: what is written
    next waits for the end of the interval the round began (so that more comes with it), then
    goes out; once an interval passes without that many, the end of the turn again."""
    loop = asyncio.get_running_loop()
    flushes = Flushes()
    busy = [FlushedAt(loop) for _ in range(BUSY_WRITES)]
    for writer in busy:
        flushes.add(writer, loop)  # type: ignore[arg-type]
    began = loop.time()  # the round, and its interval, begin after this
    await asyncio.sleep(0)
    assert all(writer.at is not None for writer in busy)

    waiting = FlushedAt(loop)
    flushes.add(waiting, loop)  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)
    if loop.time() < began + FLUSH_INTERVAL:  # (a slow machine may have passed the interval already)
        assert waiting.at is None
    await wait_until(lambda: waiting.at is not None, timeout=2)
    assert waiting.at is not None and waiting.at >= began + FLUSH_INTERVAL

    await asyncio.sleep(FLUSH_INTERVAL * 2)  # an interval with one connection written to: quiet
    quiet = FlushedAt(loop)
    flushes.add(quiet, loop)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert quiet.at is not None


def test_on_uvloops_millisecond_clock_a_busy_round_waits_for_one_timer_not_a_spin() -> None:
    """uvloop's clock counts whole milliseconds: two ticks one millisecond apart can differ by a
    hair under ``FLUSH_INTERVAL``. The round put off to the end of a busy interval goes out when
    its timer fires, in one call, instead of being put off again (with a delay rounded to zero)
    until the clock ticks once more, hundreds of times a round."""

    class Counted(Flushes):
        runs = 0

        def _run(self, loop: asyncio.AbstractEventLoop, *armed_at: float) -> None:
            self.runs += 1
            super()._run(loop, *armed_at)

    class Signals:
        def __init__(self, done: asyncio.Future[None] | None = None) -> None:
            self.done = done

        def flush(self) -> bool:
            if self.done is not None:
                self.done.set_result(None)
            return True

    async def rounds() -> list[int]:
        loop = asyncio.get_running_loop()
        flushes, runs = Counted(), []
        for _ in range(100):
            for _ in range(BUSY_WRITES):  # a busy round
                flushes.add(Signals(), loop)  # type: ignore[arg-type]
            await asyncio.sleep(0)
            flushes.runs = 0
            done = loop.create_future()
            flushes.add(Signals(done), loop)  # type: ignore[arg-type]  # put off to the interval's end
            await asyncio.wait_for(done, 5)
            runs.append(flushes.runs)
            await asyncio.sleep(0.002)
        return runs

    runs = uvloop.run(rounds())
    assert max(runs) <= 2, runs  # put off once, then written


async def test_a_failing_flush_is_reported_and_the_other_connections_are_written() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    flushes = Flushes()
    writers = [FlushedAt(loop), FlushedAt(loop, fail=True), FlushedAt(loop)]
    try:
        for writer in writers:
            flushes.add(writer, loop)  # type: ignore[arg-type]
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert all(writer.at is not None for writer in writers)
    assert [str(exc) for exc in reported] == ["flush failed"]


async def test_frames_written_while_the_loop_is_busy_reach_a_connection_together() -> None:
    """Two updates to one connection, written while the loop is busy in different turns of
    the same interval, go out in one transport write."""

    protocol, transport, state = await accepted_and_waiting()
    loop = asyncio.get_running_loop()
    flushes = Flushes.of(loop)
    others = [FlushedAt(loop) for _ in range(BUSY_WRITES)]
    for other in others:  # a round over many connections: the loop is busy
        flushes.add(other, loop)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    began = others[0].at  # at or after the interval began
    assert began is not None
    frames = protocol.scope["extensions"][FRAMES_EXTENSION]
    written = len(transport.writes)
    assert frames.write(b"update 1")
    await asyncio.sleep(0)
    assert frames.write(b"update 2")
    await wait_until(lambda: len(transport.writes) > written)
    if (
        loop.time() - began < FLUSH_INTERVAL
    ):  # both came within the interval (as they do but on a stalled machine)
        assert transport.writes[written:] == [binary_frame(b"update 1") + binary_frame(b"update 2")]
    for task in state.tasks:
        task.cancel()


def test_on_uvloops_millisecond_clock_a_delay_queue_call_runs_at_its_timer_not_in_a_spin() -> None:
    """The queue's timer runs a call once it is due: on uvloop, whose clock counts whole
    milliseconds, not after running its timer again and again (with a delay rounded to zero)
    because the clock still read a hair before the call's time (``timers.time_at_timer``)."""

    class Counted(DelayQueue):
        runs = 0

        def _run(self, *armed_at: float) -> None:
            self.runs += 1
            super()._run(*armed_at)

    async def firings() -> list[int]:
        loop = asyncio.get_running_loop()
        runs = []
        for n in range(100):
            fired = loop.create_future()
            queue = Counted(0.01 + n % 7 / 1000, lambda _target, done=fired: done.set_result(None))
            queue.add("ping")
            await asyncio.wait_for(fired, 5)
            runs.append(queue.runs)
            await asyncio.sleep(0.0013)
        return runs

    runs = uvloop.run(firings())
    assert max(runs) == 1, runs


def test_one_delay_queue_per_loop_delay_and_call_and_none_keeps_its_loop() -> None:
    def fire(_: object) -> None: ...

    async def queue_one(queue: DelayQueue) -> None:
        queue.add("still queued when the loop closes")

    loop = asyncio.new_event_loop()
    try:
        first = DelayQueue.of(loop, 15.0, fire)
        loop.run_until_complete(queue_one(first))
        assert DelayQueue.of(loop, 15.0, fire) is first
        assert DelayQueue.of(loop, 30.0, fire) is not first
        other = asyncio.new_event_loop()
        try:
            assert DelayQueue.of(other, 15.0, fire) is not first
        finally:
            other.close()
    finally:
        loop.close()
    gone = weakref.ref(loop)
    del loop, other, first
    gc.collect()
    assert gone() is None


async def test_a_cancelled_gate_waiter_is_forgotten() -> None:
    gate = Gate()
    gate.clear()
    for _ in range(100):
        waiter = asyncio.create_task(gate.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert not gate._waiters


class UnreadTransport:
    """A transport whose peer reads nothing: ``close`` only marks it closing while data waits."""

    def __init__(self) -> None:
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True  # a real transport is let go only once its buffer is written

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def upgrade_headers() -> list[tuple[bytes, bytes]]:
    """An upgrade request's headers as uvicorn's httptools protocol hands them over."""
    return [
        (b"host", b"x"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    ]


def upgraded_on(
    transport: UnreadTransport, app: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[CollabWebSocketProtocol, ServerState]:
    """A ``CollabWebSocketProtocol`` on ``transport`` that took an upgrade request (``headers``,
    ``upgrade_headers()`` unless given) and started ``app``, and the server state holding its task."""
    config = uvicorn.Config(app=app, ws_ping_interval=None)
    config.load()
    state = ServerState()
    protocol = CollabWebSocketProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.upgrade("GET", b"/ws", upgrade_headers() if headers is None else headers, "1.1")
    return protocol, state


async def test_a_server_stopping_after_the_peer_closed_ends_the_connection_without_a_second_close() -> None:
    """The peer's close frame was answered (the echo is the server's close frame) and the transport
    is closing when the server stops: the connection just ends; no second close frame is tried
    (``InvalidState`` out of uvicorn's shutdown would leave the other connections open)."""

    async def app(_scope: object, _receive: object, _send: object) -> None:  # the test plays its part
        await asyncio.Event().wait()

    transport = UnreadTransport()
    protocol, state = upgraded_on(transport, app)
    await protocol.send({"type": "websocket.accept"})
    await wait_until(lambda: protocol.accepted)  # the 101 is written at the end of the turn
    written = transport.buffered
    protocol.data_received(client_frame(0x8, (1000).to_bytes(2, "big")))
    echoed = transport.buffered - written
    protocol.shutdown()
    for task in state.tasks:
        task.cancel()
    assert echoed == 4  # the echo: header and code
    assert transport.buffered - written == echoed  # nothing after it
    assert transport.closing


async def test_a_peer_that_never_answers_the_close_frame_is_aborted_when_data_is_unread() -> None:
    """The server closed (its close frame sent) with data still in the socket's buffer; the peer
    reads nothing and never answers: after the close timeout the transport is aborted, not left
    waiting for a buffer that is never drained."""

    async def app(_scope: object, _receive: object, _send: object) -> None:  # the test plays its part
        return None

    transport = UnreadTransport()
    protocol, state = upgraded_on(transport, app)
    await protocol.send({"type": "websocket.accept"})
    protocol.close_timeout = 0.05
    await protocol.send({"type": "websocket.close", "code": 1000, "reason": ""})
    assert transport.buffered > 0 and not transport.aborted
    for _ in range(100):
        if transport.aborted:
            break
        await asyncio.sleep(0.01)
    assert transport.aborted
    await asyncio.wait_for(asyncio.gather(*state.tasks), 2)  # the application's task has ended


class CountingTransport(UnreadTransport):
    """``UnreadTransport`` that counts how often reading is paused and resumed."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.resumes = 0

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self.resumes += 1


async def accepted_protocol(transport: UnreadTransport) -> CollabWebSocketProtocol:
    """A ``CollabWebSocketProtocol`` past its handshake on ``transport``, its connect event taken."""

    async def app(_scope: object, _receive: object, _send: object) -> None:  # the test plays its part
        return None

    protocol, _ = upgraded_on(transport, app)
    await protocol.send({"type": "websocket.accept"})
    await wait_until(lambda: protocol.accepted)  # the 101 is written at the end of the turn
    assert (await protocol.receive())["type"] == "websocket.connect"
    return protocol


def small_client_frames(count: int) -> list[bytes]:
    """``count`` masked (client) binary frames of 8-byte payloads numbered 0, 1, ..."""
    return [
        Frame(Opcode.BINARY, n.to_bytes(8, "big")).serialize(mask=True, extensions=[]) for n in range(count)
    ]


async def test_a_burst_of_small_frames_is_parsed_a_part_at_a_time_in_order() -> None:
    """One read of 256 KiB of small frames (about 18,000) is not parsed in one go: parsing stops
    once the application's queue is full, and goes on, in order, as the application takes them,
    each part on a later turn of the loop (so the application waits, and others get their turn)."""
    transport = CountingTransport()
    protocol = await accepted_protocol(transport)
    frames = small_client_frames(256 * 1024 // 14)
    protocol.data_received(b"".join(frames))
    assert transport.paused
    queued = protocol.queue.qsize()
    assert READ_QUEUE_FRAMES <= queued <= PARSE_BYTES // 14 + 1, queued  # one part, not the whole read
    taken = [await protocol.receive() for _ in range(queued)]
    assert protocol.queue.empty() and protocol._unparsed  # the next part is not parsed inline
    taken += [await protocol.receive() for _ in range(len(frames) - queued)]
    received = [int.from_bytes(m["bytes"], "big") for m in taken]  # type: ignore[typeddict-item]
    assert received == list(range(len(frames)))
    assert not transport.paused and protocol._unparsed is None


async def test_a_read_full_of_pings_is_answered_a_part_per_turn_of_the_loop() -> None:
    """Pings are answered without reaching the application's queue, so the queue never stops
    their parsing: the loop's turn bounds it instead (``PARSE_BYTES`` each), with reading paused
    until the read is parsed; every ping is answered."""
    transport = CountingTransport()
    protocol = await accepted_protocol(transport)
    ping = Frame(Opcode.PING, b"").serialize(mask=True, extensions=[])
    pong = len(Frame(Opcode.PONG, b"").serialize(mask=False, extensions=[]))
    count = 256 * 1024 // len(ping)
    before = transport.buffered
    protocol.data_received(ping * count)
    assert transport.paused
    assert (transport.buffered - before) // pong <= PARSE_BYTES // len(ping) + 1  # one part this turn
    turns = 0
    while transport.paused and turns < 1000:
        await asyncio.sleep(0)
        turns += 1
    assert not transport.paused and turns >= count * len(ping) // PARSE_BYTES - 1
    assert (transport.buffered - before) // pong == count


async def test_frames_not_parsed_yet_reach_the_application_before_the_disconnect() -> None:
    transport = CountingTransport()
    protocol = await accepted_protocol(transport)
    frames = small_client_frames(10_000)
    protocol.data_received(b"".join(frames))
    assert protocol._unparsed
    protocol.connection_lost(None)
    messages = [await protocol.receive() for _ in range(len(frames) + 1)]
    assert [int.from_bytes(m["bytes"], "big") for m in messages[:-1]] == list(range(len(frames)))  # type: ignore[typeddict-item]
    assert messages[-1]["type"] == "websocket.disconnect"


async def test_a_large_frame_in_one_read_is_parsed_in_one_turn() -> None:
    """The bound is on frames per turn, not bytes: a 200 KB update arriving in one read reaches
    the application at once, not a part per turn."""
    transport = CountingTransport()
    protocol = await accepted_protocol(transport)
    payload = bytes(range(256)) * 800
    protocol.data_received(Frame(Opcode.BINARY, payload).serialize(mask=True, extensions=[]))
    assert protocol._unparsed is None and protocol.queue.qsize() == 1
    assert (await protocol.receive())["bytes"] == payload  # type: ignore[typeddict-item]


class RecordingTransport(UnreadTransport):
    """``UnreadTransport`` that keeps each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(bytes(data))


async def upgraded(app: Any) -> tuple[CollabWebSocketProtocol, RecordingTransport, ServerState]:
    """``upgraded_on`` a recording transport."""
    transport = RecordingTransport()
    protocol, state = upgraded_on(transport, app)
    return protocol, transport, state


async def accepted_and_waiting() -> tuple[CollabWebSocketProtocol, RecordingTransport, ServerState]:
    """``upgraded`` with an application that accepts and then waits (the test plays its part),
    once the 101 is written."""

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()

    protocol, transport, state = await upgraded(app)
    await wait_until(lambda: protocol.accepted)
    return protocol, transport, state


async def test_the_101_and_the_frames_written_in_its_turn_go_out_in_one_write() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        frames = scope["extensions"][FRAMES_EXTENSION]
        assert frames.write(b"\x00\x00\x01\x00") and frames.write("hello")  # sync step 1, then text
        await asyncio.Event().wait()

    protocol, transport, state = await upgraded(app)
    await wait_until(lambda: protocol.accepted)
    assert len(transport.writes) == 1
    head, _, frames = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert frames == binary_frame(b"\x00\x00\x01\x00") + text_frame("hello")
    for task in state.tasks:
        task.cancel()


@pytest.mark.parametrize("then", ["close", "send", "return", "raise", "shutdown"])
async def test_what_follows_the_accept_in_its_turn_never_overtakes_the_101(then: str) -> None:
    """Whatever comes after the accept in the same turn of the loop (a close or a frame sent the
    ASGI way, the application returning or failing, the server stopping) finds the 101 written
    before it."""

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if then == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        elif then == "send":
            await send({"type": "websocket.send", "bytes": b"\x01"})
        elif then == "raise":
            raise RuntimeError("a fault of the application's")
        elif then == "shutdown":
            protocol.shutdown()
        if then in ("close", "send", "shutdown"):
            await asyncio.Event().wait()

    protocol, transport, state = await upgraded(app)
    ends = then in ("return", "raise")  # the connection is closed after the 101
    await wait_until(lambda: transport.closing if ends else len(transport.writes) == 2)
    sent = b"".join(transport.writes)
    assert sent.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), sent
    after = sent.partition(b"\r\n\r\n")[2]
    expected = {
        "close": b"\x88\x05" + (4000).to_bytes(2, "big") + b"bye",
        "send": binary_frame(b"\x01"),
        "return": b"",
        "raise": b"",
        "shutdown": b"\x88\x02" + (1012).to_bytes(2, "big"),
    }[then]
    assert after == expected
    for task in state.tasks:
        task.cancel()


async def test_frames_waiting_for_their_round_go_out_before_the_servers_close_frame_and_none_after() -> None:
    """The server stops with frames written but not flushed yet: they go out before its close
    frame (1012); a frame written after the close frame is not sent (RFC 6455 section 5.5.1)."""

    protocol, transport, state = await accepted_and_waiting()
    frames = protocol.scope["extensions"][FRAMES_EXTENSION]
    written = len(transport.writes)
    assert frames.write(b"update")
    protocol.shutdown()
    assert not frames.write(b"too late")
    await asyncio.sleep(0)  # the round that would have written it
    assert b"".join(transport.writes[written:]) == binary_frame(b"update") + b"\x88\x02" + (1012).to_bytes(
        2, "big"
    )
    for task in state.tasks:
        task.cancel()


async def test_a_server_stopping_while_a_refused_upgrade_lingers_stops_cleanly() -> None:
    """An upgrade the protocol refused itself (here a key that is not 16 bytes) never had a scope;
    its connection lingers open for a while, and the server stopping then must not fail on it."""

    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        raise AssertionError("a refused upgrade never reaches the application")

    headers = [
        (b"sec-websocket-key", b"c2hvcnQ=") if name == b"sec-websocket-key" else (name, value)
        for name, value in upgrade_headers()
    ]
    transport = RecordingTransport()
    protocol, _ = upgraded_on(transport, app, headers)
    assert transport.writes[0].startswith(b"HTTP/1.1 400 ")
    protocol.shutdown()
    assert len(transport.writes) == 1 and transport.closing
