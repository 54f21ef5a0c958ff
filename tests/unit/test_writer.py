"""``server.persistence.UpdateWriter``: group commit, retry with backoff, ``discard``, ``flush``,
synchronous mode, compaction triggers.

The store is a fake whose ``documents.append`` fails a given number of times and can be held at
a gate, so every state of the writer can be observed. The retry backoff does not really sleep: the
writer's ``asyncio.sleep`` is replaced by one that records the delay and returns at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt_store import Compaction, StoreUnavailable, open_store
from server import persistence
from server.persistence import UpdateWriter
from tests.support.wait import wait_until

DEADLINE = 5.0
Row = tuple[int, bytes]


class FakeDocuments:
    """``store.documents`` as the writer uses it. Attempt ``n`` (1-based) fails while
    ``n <= failures``; ``gates[n]`` holds attempt ``n`` until set."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or StoreUnavailable("connection refused", operation="append")
        self.attempts: list[list[Row]] = []
        self.stored: list[Row] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.compacted: list[int] = []
        self.compact_gate: asyncio.Event | None = None
        self.merged = 0

    async def append(self, rows: list[Row]) -> None:
        self.attempts.append(list(rows))
        attempt = len(self.attempts)
        gate = self.gates.get(attempt)
        if gate is not None:
            await gate.wait()
        if attempt <= self.failures:
            raise self.error
        self.stored.extend(rows)

    async def compact(self, document_id: int) -> Compaction:
        self.compacted.append(document_id)
        if self.compact_gate is not None:
            await self.compact_gate.wait()
        return Compaction(document_id, merged=self.merged, snapshot_bytes=10)

    def gate(self, attempt: int) -> asyncio.Event:
        self.gates[attempt] = asyncio.Event()
        return self.gates[attempt]


class FakeStore:
    dialect = "fake"

    def __init__(self, documents: FakeDocuments) -> None:
        self.documents = documents
        self.ping_error: Exception | None = None

    async def ping(self) -> None:
        if self.ping_error is not None:
            raise self.ping_error


class InstantSleep:
    """Stands for the ``asyncio`` module inside ``server.persistence``: ``sleep`` records the
    delay and returns after one loop turn; everything else is the real ``asyncio``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._real_sleep = asyncio.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        return await self._real_sleep(0, result)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> InstantSleep:
    fake = InstantSleep()
    monkeypatch.setattr(persistence, "asyncio", fake)
    return fake


def update(n: int) -> bytes:
    return f"update-{n}".encode()


def rows(*pairs: tuple[int, int]) -> list[Row]:
    return [(document_id, update(n)) for document_id, n in pairs]


async def flushed(writer: UpdateWriter) -> None:
    await asyncio.wait_for(writer.flush(), DEADLINE)


def writer_for(store: FakeStore, **options: Any) -> UpdateWriter:
    options.setdefault("interval", 60.0)  # nothing is written until flushed, unless a test says so
    return UpdateWriter(store, **options)  # type: ignore[arg-type]


# -- retry ----------------------------------------------------------------------------------------


async def test_failed_writes_keep_the_buffer_and_retry_with_backoff_until_stored(clock: InstantSleep) -> None:
    documents = FakeDocuments(failures=5)
    reports: list[int] = []
    async with writer_for(FakeStore(documents), retry_max=0.3, on_stored=reports.append) as writer:
        for n in range(3):
            assert writer.append(1, update(n)) == n + 1
        await flushed(writer)
        assert documents.stored == rows((1, 0), (1, 1), (1, 2))
        assert documents.attempts == [rows((1, 0), (1, 1), (1, 2))] * 6  # the same batch each time
        assert clock.delays == [0.05, 0.1, 0.2, 0.3, 0.3]  # doubling, capped at retry_max
        assert writer.pending == 0
        assert writer.last_error is None
        assert reports == [3]


async def test_backoff_starts_again_after_a_success(clock: InstantSleep) -> None:
    documents = FakeDocuments(failures=2)
    async with writer_for(FakeStore(documents), retry_max=10.0) as writer:
        writer.append(1, update(1))
        await flushed(writer)
        documents.failures = len(documents.attempts) + 2  # the next two attempts fail too
        writer.append(1, update(2))
        await flushed(writer)
    assert clock.delays == [0.05, 0.1, 0.05, 0.1]
    assert documents.stored == rows((1, 1), (1, 2))


async def test_while_failing_pending_and_last_error_say_so_and_new_updates_wait_their_turn(
    clock: InstantSleep,
) -> None:
    documents = FakeDocuments(failures=2)
    third = documents.gate(3)
    store = FakeStore(documents)
    reports: list[int] = []
    async with writer_for(store, on_stored=reports.append) as writer:
        writer.append(1, update(1))
        writer.append(2, update(2))
        writer.append(1, update(3))
        flushing = asyncio.create_task(writer.flush())
        await wait_until(lambda: len(documents.attempts) == 3, timeout=DEADLINE)  # held at the gate
        assert writer.pending == 3
        assert clock.delays == [0.05, 0.1]
        assert writer.last_error == "StoreUnavailable: append: connection refused"
        assert documents.stored == []
        health = await writer.health()
        health.pop("latency_ms")
        assert health == {
            "status": "write_failing",
            "dialect": "fake",
            "error": "StoreUnavailable: append: connection refused",
            "pending_updates": 3,
            "last_error": "StoreUnavailable: append: connection refused",
        }
        writer.append(2, update(4))  # arrives while the third attempt is in flight
        assert writer.pending == 4
        assert not flushing.done()
        third.set()
        await asyncio.wait_for(flushing, DEADLINE)
        await flushed(writer)
        assert documents.attempts[2:] == [rows((1, 1), (2, 2), (1, 3)), rows((2, 4))]
        assert documents.stored == rows((1, 1), (2, 2), (1, 3), (2, 4))
        assert (writer.pending, writer.last_error) == (0, None)
        assert reports == [3, 4]
        health = await writer.health()
        assert (health["status"], health["pending_updates"], health["last_error"]) == ("ok", 0, None)


async def test_any_exception_is_retried_not_only_store_errors(clock: InstantSleep) -> None:
    documents = FakeDocuments(failures=1, error=RuntimeError("driver bug"))
    async with writer_for(FakeStore(documents)) as writer:
        writer.append(5, update(1))
        await flushed(writer)
    assert documents.stored == rows((5, 1))
    assert len(documents.attempts) == 2
    assert clock.delays == [0.05]


async def test_health_reports_a_database_that_cannot_be_reached() -> None:
    store = FakeStore(FakeDocuments())
    store.ping_error = StoreUnavailable("connection refused", operation="ping")
    writer = writer_for(store)
    writer.append(1, update(1))
    health = await writer.health()
    assert health == {
        "status": "down",
        "dialect": "fake",
        "error": "connection refused",
        "pending_updates": 1,
        "last_error": None,
    }


# -- group commit and flush -----------------------------------------------------------------------


async def test_group_commit_writes_a_turns_updates_in_one_transaction() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents), interval=0.01) as writer:
        for n in range(4):
            writer.append(n % 2, update(n))
        await wait_until(lambda: len(documents.stored) == 4, timeout=DEADLINE)  # no flush: the interval
        assert documents.attempts == [rows((0, 0), (1, 1), (0, 2), (1, 3))]
        assert writer.pending == 0


async def test_flush_waits_for_what_was_appended_before_it_only() -> None:
    documents = FakeDocuments()
    first, second = documents.gate(1), documents.gate(2)
    async with writer_for(FakeStore(documents)) as writer:  # an interval of 60 s: flush hurries it
        writer.append(1, update(1))
        writer.append(1, update(2))
        earlier = asyncio.create_task(writer.flush())
        await wait_until(lambda: len(documents.attempts) == 1, timeout=DEADLINE)
        writer.append(1, update(3))  # after the flush was called
        later = asyncio.create_task(writer.flush())
        assert not earlier.done()
        first.set()
        await asyncio.wait_for(earlier, DEADLINE)
        assert documents.stored == rows((1, 1), (1, 2))
        assert writer.pending == 1
        await wait_until(lambda: len(documents.attempts) == 2, timeout=DEADLINE)
        assert not later.done()
        second.set()
        await asyncio.wait_for(later, DEADLINE)
        assert documents.stored == rows((1, 1), (1, 2), (1, 3))
        assert writer.pending == 0


async def test_flush_with_nothing_pending_returns_at_once() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents)) as writer:
        await flushed(writer)
        assert documents.attempts == []


async def test_write_stores_rows_of_another_instance_or_times_out_keeping_them() -> None:
    documents = FakeDocuments()
    gate = documents.gate(1)
    async with writer_for(FakeStore(documents)) as writer:
        with pytest.raises(TimeoutError):
            await writer.write(rows((3, 1), (4, 2)), timeout=0.05)
        assert writer.pending == 2  # still buffered: stored later
        gate.set()
        await writer.write(rows((3, 3)), timeout=DEADLINE)
        assert documents.stored == rows((3, 1), (4, 2), (3, 3))


async def test_leaving_the_writer_stores_what_is_buffered() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents)) as writer:
        writer.append(9, update(1))
        writer.append(9, update(2))
    assert documents.stored == rows((9, 1), (9, 2))
    assert writer.pending == 0


# -- discard --------------------------------------------------------------------------------------


async def test_discard_drops_the_buffered_updates_of_deleted_documents() -> None:
    documents = FakeDocuments()
    reports: list[int] = []
    async with writer_for(FakeStore(documents), on_stored=reports.append) as writer:
        writer.append(1, update(1))
        writer.append(2, update(2))
        writer.append(1, update(3))
        writer.append(3, update(4))
        writer.discard([1, 3])
        await flushed(writer)
        assert documents.stored == rows((2, 2))
        assert writer.pending == 0  # dropped updates count as done: flush does not wait for them
        assert reports == [4]


async def test_discard_during_a_failing_write_drops_them_from_the_retry(clock: InstantSleep) -> None:
    documents = FakeDocuments(failures=1)
    first = documents.gate(1)
    async with writer_for(FakeStore(documents)) as writer:
        writer.append(1, update(1))
        writer.append(2, update(2))
        flushing = asyncio.create_task(writer.flush())
        await wait_until(lambda: len(documents.attempts) == 1, timeout=DEADLINE)
        writer.discard([2])  # deleted while the first attempt is in flight (and about to fail)
        first.set()
        await asyncio.wait_for(flushing, DEADLINE)
    assert documents.attempts == [rows((1, 1), (2, 2)), rows((1, 1))]
    assert documents.stored == rows((1, 1))
    assert clock.delays == [0.05]


async def test_updates_of_other_documents_are_kept_across_a_discard() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents)) as writer:
        writer.discard([1])
        writer.append(2, update(1))
        await flushed(writer)
        writer.append(1, update(2))  # the buffer was empty since: the discard is over
        await flushed(writer)
    assert documents.stored == rows((2, 1), (1, 2))


# -- synchronous mode -----------------------------------------------------------------------------


async def test_synchronous_mode_relays_only_after_storing_in_order(clock: InstantSleep) -> None:
    documents = FakeDocuments(failures=1)
    second = documents.gate(2)
    relayed: list[int] = []
    async with writer_for(FakeStore(documents), interval=0) as writer:
        assert writer.synchronous
        for n in (1, 2):
            seq = writer.append(1, update(n))
            writer.when_relayable(seq, lambda seq=seq: relayed.append(seq))
        await wait_until(lambda: len(documents.attempts) == 2, timeout=DEADLINE)  # failed once, retrying
        assert relayed == []
        assert documents.stored == []
        assert clock.delays == [0.05]
        second.set()
        await wait_until(lambda: relayed == [1, 2], timeout=DEADLINE)
        assert documents.stored == rows((1, 1), (1, 2))
        writer.when_relayable(2, lambda: relayed.append(-2))  # already stored: at once
        assert relayed == [1, 2, -2]


async def test_synchronous_mode_a_failing_relay_does_not_stop_the_next() -> None:
    documents = FakeDocuments()
    relayed: list[int] = []

    def broken() -> None:
        raise RuntimeError("relay bug")

    async with writer_for(FakeStore(documents), interval=0) as writer:
        writer.when_relayable(writer.append(1, update(1)), broken)
        writer.when_relayable(writer.append(1, update(2)), lambda: relayed.append(2))
        await flushed(writer)
        await wait_until(lambda: relayed == [2], timeout=DEADLINE)


async def test_group_commit_relays_at_once_before_storing() -> None:
    documents = FakeDocuments()
    relayed: list[int] = []
    async with writer_for(FakeStore(documents), interval=60.0) as writer:
        assert not writer.synchronous
        writer.when_relayable(writer.append(1, update(1)), lambda: relayed.append(1))
        assert relayed == [1]
        assert documents.attempts == []


# -- compaction -----------------------------------------------------------------------------------


async def test_compacts_a_document_once_its_log_reaches_the_update_count() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents), compact_after_updates=3) as writer:
        writer.append(1, update(1))
        writer.append(2, update(2))
        writer.append(1, update(3))
        await flushed(writer)
        assert documents.compacted == []
        writer.append(1, update(4))
        await flushed(writer)
        await wait_until(lambda: documents.compacted == [1], timeout=DEADLINE)


async def test_compacts_a_document_once_its_log_reaches_the_byte_size() -> None:
    documents = FakeDocuments()
    async with writer_for(FakeStore(documents), compact_after_bytes=1024) as writer:
        writer.append(4, b"x" * 1000)
        await flushed(writer)
        writer.append(4, b"y" * 24)
        await flushed(writer)
        await wait_until(lambda: documents.compacted == [4], timeout=DEADLINE)


async def test_compact_unloaded_compacts_a_tail_and_again_if_asked_while_running() -> None:
    documents = FakeDocuments()
    documents.compact_gate = asyncio.Event()
    async with writer_for(FakeStore(documents)) as writer:
        writer.track(6, tail_count=0, tail_bytes=0)
        writer.compact_unloaded(6)  # nothing to compact
        writer.track(8, tail_count=2, tail_bytes=40)
        writer.compact_unloaded(8)
        await wait_until(lambda: documents.compacted == [8], timeout=DEADLINE)
        writer.track(8, tail_count=1, tail_bytes=20)  # loaded, written and unloaded again meanwhile
        writer.compact_unloaded(8)
        documents.compact_gate.set()
        await wait_until(lambda: documents.compacted == [8, 8], timeout=DEADLINE)
    assert documents.compacted == [8, 8]


# -- with the real store: a deleted document's id used again --------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Any]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}") as store:
        yield store


def text_update(content: str) -> bytes:
    doc = Doc(client_id=1)
    doc.get("t", type=Text).insert(0, content)
    return doc.get_update()


async def test_a_new_document_that_reuses_a_deleted_documents_id_keeps_its_updates(
    sqlite_store: Any,
) -> None:
    """SQLite gives a deleted newest document's id to the next document created: ``discard``
    drops what is buffered for the deleted one, not what comes later for the new one."""
    store = sqlite_store
    await store.workspaces.create(workspace_id="ws", name="ws", visibility="open", owner_id="alice")
    await store.documents.ensure("ws", "a.md")
    deleted_id, _ = await store.documents.ensure("ws", "b.md")
    async with UpdateWriter(store, interval=60.0) as writer:
        writer.append(deleted_id, text_update("old b"))
        await flushed(writer)
        # What DELETE /workspaces/ws/documents/b.md does: delete, then CloseDocument -> discard.
        assert await store.workspaces.delete_document(workspace_id="ws", path="b.md") == deleted_id
        writer.discard([deleted_id])
        # A document opened right after (POST .../c.md/update) gets a row, and an update.
        new_id, created = await store.documents.ensure("ws", "c.md")
        assert created and new_id == deleted_id
        content = text_update("new c")
        writer.append(new_id, content)
        await flushed(writer)
        assert writer.pending == 0  # flush says it is stored
    stored = await store.documents.load("ws", "c.md")
    assert stored.updates == [content]
