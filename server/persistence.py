"""Group commit of document updates, and compaction of long update logs.

Every accepted update goes into one in-memory buffer; a single task writes the buffer in one
transaction at most ``interval`` after the first update arrived. A failed write keeps the buffer
and retries with backoff, so nothing accepted is dropped while the database is away; ``flush``
waits until everything appended before the call is stored.

Durability: with ``interval > 0`` (group commit) updates are relayed to other clients at once and
stored within ``interval``; a process killed in between loses that window's updates (unless
another instance stores them from the Redis streams). With ``interval == 0`` (synchronous mode)
the buffer is written as soon as it holds anything, and ``when_relayable`` holds each relay until
its update is stored: an update another client has seen is in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdt_store import Store, StoreError, StoreUnavailable

from . import metrics

log = logging.getLogger(__name__)

# How long stopping waits for the compaction of the loaded documents' logs.
SHUTDOWN_COMPACT_SECONDS = 5.0


@dataclass(slots=True)
class _Tail:
    """What this instance knows of a document's log since its last compaction."""

    count: int = 0
    bytes: int = 0


class UpdateWriter:
    def __init__(
        self,
        store: Store,
        *,
        interval: float = 0.1,
        compact_after_updates: int = 500,
        compact_after_bytes: int = 4 * 1024 * 1024,
        retry_max: float = 10.0,
        on_stored: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.compact_after_updates = compact_after_updates
        self.compact_after_bytes = compact_after_bytes
        self.retry_max = retry_max
        self.on_stored = on_stored  # called after each write with how many updates are stored
        # (document id, update); None in place of an update of a deleted document (``discard``)
        self._buffer: list[tuple[int, bytes | None]] = []
        self._appended = 0  # updates ever appended
        self._stored = 0  # updates ever stored; the first `_stored` appended are in the database
        self._progress = asyncio.Condition()
        self._has_items = asyncio.Event()
        self._hurry = asyncio.Event()
        self._tails: dict[int, _Tail] = {}
        self._compacting: dict[int, asyncio.Task[None]] = {}
        self._compact_again: set[int] = set()  # unloaded while a compaction ran: once more after it
        self._task: asyncio.Task[None] | None = None
        self._held: deque[tuple[int, Callable[[], None]]] = deque()  # synchronous mode: (seq, relay)
        # When the first update appended after the last batch was taken arrived (perf_counter),
        # for the group-commit delay metric; ``_stamp_next``: the next append sets it.
        self._oldest_at = 0.0
        self._stamp_next = True
        self._writing_since: float | None = None  # ``_oldest_at`` of the batch being written
        self.last_error: str | None = None

    async def __aenter__(self) -> UpdateWriter:
        if self._task is not None:
            raise RuntimeError("UpdateWriter already running")
        self._task = asyncio.create_task(self._run(), name="update-writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.wait_for(self.flush(), timeout=max(30.0, self.retry_max * 3))
        except TimeoutError:
            log.error("shutdown: %d document updates could not be stored: %s", self.pending, self.last_error)
        else:
            # Every update is stored: compact what the loaded documents logged since their last
            # compaction, so that after a restart their first client is not kept waiting while the
            # log is applied. Bounded by ``SHUTDOWN_COMPACT_SECONDS``; what is left stays in the log.
            for document_id, tail in list(self._tails.items()):
                if not tail.count:
                    continue
                if document_id in self._compacting:
                    self._compact_again.add(document_id)  # rows stored while it runs are not in it
                else:
                    self._start_compaction(document_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_COMPACT_SECONDS
        while self._compacting:  # a finishing compaction may start the one it owes
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._compact_again.clear()
                for task in self._compacting.values():
                    task.cancel()
                await asyncio.gather(*self._compacting.values(), return_exceptions=True)
                break
            await asyncio.wait(list(self._compacting.values()), timeout=remaining)
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    @property
    def pending(self) -> int:
        return self._appended - self._stored

    @property
    def lag(self) -> float:
        """Seconds the oldest update not yet stored has waited (0 when everything is stored)."""
        if not self.pending:
            return 0.0
        since = self._writing_since if self._writing_since is not None else self._oldest_at
        return max(0.0, time.perf_counter() - since)

    async def health(self) -> dict[str, Any]:
        """The ``/health/database`` body: ``status`` is ``ok``, ``down`` (the database cannot be
        reached; ``error`` says why) or ``write_failing`` (reachable, but storing updates fails:
        a SQLite file locked by someone else, a full disk); ``latency_ms`` of a round trip;
        ``pending_updates`` accepted but not yet stored (kept in memory and retried)."""
        waiting = {"pending_updates": self.pending, "last_error": self.last_error}
        dialect = self.store.dialect
        started = time.perf_counter()
        try:
            await self.store.ping()
        except StoreError as exc:
            reason = exc.reason if isinstance(exc, StoreUnavailable) else str(exc)
            return {"status": "down", "dialect": dialect, "error": reason[:300], **waiting}
        latency = round((time.perf_counter() - started) * 1000, 2)
        if self.last_error is not None:
            return {
                "status": "write_failing",
                "dialect": dialect,
                "latency_ms": latency,
                "error": self.last_error[:300],
                **waiting,
            }
        return {"status": "ok", "dialect": dialect, "latency_ms": latency, **waiting}

    @property
    def synchronous(self) -> bool:
        """Synchronous mode (``PERSIST_INTERVAL_MS=0``): updates are relayed only once stored."""
        return self.interval == 0

    def when_relayable(self, seq: int, relay: Callable[[], None]) -> None:
        """Call ``relay`` when update ``seq`` (as returned by ``append``) may be shown to others:
        at once under group commit, once it is stored in synchronous mode. Relays run in order."""
        if not self.synchronous or self._stored >= seq:
            relay()
        else:
            self._held.append((seq, relay))

    def track(self, document_id: int, *, tail_count: int, tail_bytes: int) -> None:
        """Record the size of a freshly loaded document's uncompacted log."""
        self._tails[document_id] = _Tail(tail_count, tail_bytes)

    def forget(self, document_id: int) -> None:
        self._tails.pop(document_id, None)

    def compact_unloaded(self, document_id: int) -> None:
        """The document's room was unloaded (its updates are stored): compact whatever its log
        holds, so an idle document is stored as its own encoded state, and stop tracking it."""
        tail = self._tails.pop(document_id, None)
        if tail is None or not tail.count:
            return
        if document_id in self._compacting:
            self._compact_again.add(document_id)  # rows stored while it runs are not in it
        else:
            self._start_compaction(document_id)

    def discard(self, document_ids: list[int]) -> None:
        """The documents were deleted: drop their buffered updates instead of storing them."""
        # In place: sequence numbers and the batch being written keep their positions. Only what
        # is buffered now is dropped: a document created later may get a deleted one's id back
        # (SQLite reuses the highest), and its updates must be stored.
        discarded = set(document_ids)
        self._buffer = [(doc, None if doc in discarded else update) for doc, update in self._buffer]
        for document_id in document_ids:
            self.forget(document_id)

    def append(self, document_id: int, update: bytes) -> int:
        """Buffer an update for storage; returns its sequence number (1, 2, ...). Updates are
        stored in that order: once ``on_stored`` reports ``n``, updates 1 to ``n`` are stored."""
        if self._stamp_next:
            self._stamp_next = False
            self._oldest_at = time.perf_counter()
        self._buffer.append((document_id, update))
        self._appended += 1
        self._has_items.set()
        return self._appended

    async def write(self, rows: list[tuple[int, bytes]], *, timeout: float = 10.0) -> None:
        """Store ``(document id, update)`` rows this instance did not accept (a stopped
        instance's): buffered like any update, returns once they are stored. Raises
        ``TimeoutError`` after ``timeout`` seconds (they are still stored later)."""
        for document_id, update in rows:
            self.append(document_id, update)
        await asyncio.wait_for(self.flush(), timeout)

    async def flush(self) -> None:
        """Return once every update appended before this call is stored."""
        target = self._appended
        if self._stored >= target:
            return
        self._hurry.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._stored >= target)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            await self._has_items.wait()
            if self.interval > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), timeout=self.interval)
            batch = self._buffer[:]
            if self._writing_since is None:
                self._writing_since = self._oldest_at
            self._stamp_next = True
            rows = [(doc, update) for doc, update in batch if update is not None]
            try:
                await self.store.documents.append(rows)
            except Exception as exc:
                metrics.DATABASE_ERRORS.labels("store_updates").inc()
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.error(
                    "storing %d updates failed, retrying in %.2fs: %s",
                    len(batch),
                    delay,
                    self.last_error,
                    exc_info=not isinstance(exc, StoreError),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = 0.05
            self.last_error = None
            if rows:
                metrics.GROUP_COMMIT_BATCH.observe(len(rows))
                metrics.GROUP_COMMIT_DELAY.observe(time.perf_counter() - self._writing_since)
            self._writing_since = None
            del self._buffer[: len(batch)]
            if not self._buffer:
                self._has_items.clear()
                self._hurry.clear()
            self._stored += len(batch)
            if self.on_stored is not None:
                self.on_stored(self._stored)
            self._release_held()
            async with self._progress:
                self._progress.notify_all()
            self._note_stored(rows)

    def _release_held(self) -> None:
        while self._held and self._held[0][0] <= self._stored:
            _, relay = self._held.popleft()
            try:
                relay()
            except Exception:
                log.exception("relaying a stored update failed")

    def _note_stored(self, batch: list[tuple[int, bytes]]) -> None:
        for document_id, update in batch:
            tail = self._tails.get(document_id)
            if tail is None:
                tail = self._tails[document_id] = _Tail()
            tail.count += 1
            tail.bytes += len(update)
            if tail.count >= self.compact_after_updates or tail.bytes >= self.compact_after_bytes:
                self._start_compaction(document_id)

    def _start_compaction(self, document_id: int) -> None:
        if document_id not in self._compacting:
            self._compacting[document_id] = asyncio.create_task(
                self._compact(document_id), name=f"compact-{document_id}"
            )

    async def _compact(self, document_id: int) -> None:
        try:
            result = await self.store.documents.compact(document_id)
        except StoreError as exc:
            metrics.COMPACTIONS.labels("failed").inc()
            log.error("compacting document %s failed (will retry after more updates): %s", document_id, exc)
        except Exception:
            metrics.COMPACTIONS.labels("failed").inc()
            log.exception("compacting document %s failed", document_id)
        else:
            metrics.COMPACTIONS.labels("ok").inc()
            tail = self._tails.get(document_id)
            if tail is not None:
                # Rows stored while compaction ran may or may not be merged; counting them again
                # only makes the next compaction come slightly early.
                remaining = max(0, tail.count - result.merged)
                tail.bytes = tail.bytes * remaining // tail.count if tail.count else 0
                tail.count = remaining
            log.debug(
                "compacted document %s: merged %d updates into %d bytes",
                document_id,
                result.merged,
                result.snapshot_bytes,
            )
        finally:
            self._compacting.pop(document_id, None)
            if document_id in self._compact_again:
                self._compact_again.discard(document_id)
                self._start_compaction(document_id)
