"""``server.websocket``: the frames the server writes directly are the ones ``websockets`` itself
would write (unmasked, final, binary or text), at every length encoding; ``Inbox`` and ``Gate``
behave as the ``asyncio.Queue`` and ``asyncio.Event`` they stand in for."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode

from server.websocket import Gate, Inbox, binary_frame, text_frame


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
