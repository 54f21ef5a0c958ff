"""A room: one loaded Yjs document, its awareness, and the connections editing it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pycrdt import Awareness, Doc, merge_updates

from crdt_store.yjs_state import APPLY_BATCH, apply_batched

from . import metrics, protocol
from .close_codes import CloseCode
from .connection import Connection
from .protocol import MessageType, ProtocolError, SyncType
from .vocabulary import is_workspace_id
from .ws_frames import Framed
from .yjs_format import (
    OFF_LOOP_BYTES,
    Costs,
    UpdateFacts,
    check_update,
    check_update_soon,
    decode_state_vector,
    split_update,
    update_parts_soon,
)

log = logging.getLogger(__name__)


READ_ONLY = protocol.auth_permission_denied("read-only: your role in this workspace cannot edit")
# A stored update is applied in parts of this many structs when a room loads (a chain of one-struct
# clients, as a compacted document can hold, costs about 25 us a struct: 50 ms a part).
APPLY_STRUCTS = 2_000

# What one struct or deletion of an update may cost Yrs to apply, at most: a constant; for one
# that may split an item of the document (Yrs measures a string item's UTF-16 length again, and
# finds an offset in it by walking it), time in proportion to that item's length; for one that
# Yjs may have to place among concurrent items, in proportion to their number. Neither is more
# than the clock units of all the document's clients together, nor than the bytes of the updates
# it was built from (``BYTE_UNITS`` to a byte: a unit of text came as at least one byte of UTF-8,
# an item or a split as at least one byte of a struct or deletion; a garbage-collected range or
# deleted content, which never splits at a cost or walks, adds clock units for a few bytes).
# Measured in benchmarks/long_runs.py: 1.4 ns a unit of ASCII text split, 3 for CJK; 120 ns an
# item walked.
STRUCT_SECONDS = 2e-6
SPLIT_SECONDS = 5e-9
WALK_SECONDS = 150e-9
BYTE_UNITS = 2
# A client's update that could cost more than this is applied in parts of at most this cost
# (at least one struct),
PART_SECONDS = 0.002
# for about this long in each event-loop turn.
TURN_SECONDS = 0.005


# The lock each loop's updates applied in parts take turns with (``Room.apply_update``).
_PARTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _in_parts(loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
    lock = _PARTS.get(loop)
    if lock is None:
        lock = _PARTS[loop] = asyncio.Lock()
    return lock


def struct_costs(units: int) -> Costs:
    """What one struct or deletion may cost at most, in seconds, in a document of ``units``
    clock units (``yjs_format.Costs``): a deletion as a split at each end and a walk's step
    for each unit it covers."""
    return Costs(
        plain=STRUCT_SECONDS,
        split=STRUCT_SECONDS + units * SPLIT_SECONDS,
        walk=STRUCT_SECONDS + units * WALK_SECONDS,
        deleted=WALK_SECONDS,
        units=units,
    )


def update_cost(facts: UpdateFacts, costs: Costs) -> float:
    """What applying an update may cost at most, in seconds, by ``costs`` (``struct_costs``)."""
    plain = facts.structs - facts.walks - facts.splits
    structs = plain * costs.plain + facts.splits * costs.split + facts.walks * costs.walk
    covered = min(facts.deleted, facts.deletions * costs.units)
    return structs + facts.deletions * costs.deletion_ends + covered * costs.deleted


class DocumentBroken(Exception):
    """pycrdt cannot encode the room's document; the room is being reloaded from storage."""


# A stored update larger than this is applied in parts when a room loads.
LOAD_PARTS_BYTES = 256 * 1024
# A room's load applies its stored updates for about this long before the loop serves others.
LOAD_TURN_SECONDS = 0.005


async def apply_in_parts(update: bytes, apply: Callable[[bytes], None]) -> None:
    """``apply`` a large update in parts of ``APPLY_STRUCTS`` structs, one event-loop turn each
    (the update is split in a worker thread). An update that cannot be split (which the
    service's own checks would refuse today) is applied whole."""
    try:
        parts = await asyncio.to_thread(split_update, update, APPLY_STRUCTS)
    except ProtocolError:
        parts = [update]
    for part in parts:
        apply(part)
        # A timer, not sleep(0): the loop then serves the I/O and timers that are waiting before
        # this task goes on (sleep(0) would run the next part first).
        await asyncio.sleep(1e-4)


async def load_updates(doc: Doc[Any], updates: Sequence[bytes]) -> None:
    """Apply a document's stored updates (snapshot first, then the log, in order) to ``doc``:
    runs of small updates ``APPLY_BATCH`` to a transaction (``crdt_store.yjs_state``), an update
    larger than ``LOAD_PARTS_BYTES`` in parts (``apply_in_parts``, one event-loop turn per part),
    the batches about ``LOAD_TURN_SECONDS`` to a turn. Raises what ``Doc.apply_update`` raises."""
    start = 0
    for end, update in enumerate(updates):
        if len(update) > LOAD_PARTS_BYTES:
            await _apply_run(doc, updates[start:end])
            await apply_in_parts(update, doc.apply_update)
            start = end + 1
    await _apply_run(doc, updates[start:])


async def _apply_run(doc: Doc[Any], updates: Sequence[bytes]) -> None:
    turn_ends = time.perf_counter() + LOAD_TURN_SECONDS
    for start in range(0, len(updates), APPLY_BATCH):
        if time.perf_counter() > turn_ends:
            # The loop serves what is waiting (one more batch may go first); not a timer, whose
            # resolution (a millisecond or more per wait) would dominate a load of short batches.
            await asyncio.sleep(0)
            turn_ends = time.perf_counter() + LOAD_TURN_SECONDS
        apply_batched(doc, updates[start : start + APPLY_BATCH])


def is_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic raised through pycrdt (a ``BaseException``)."""
    return type(exc).__name__ == "PanicException"


# A document path is what Yjs apps choose: anything printable, but bounded and without control
# bytes, in UTF-8 bytes too: with its workspace id it is one database index entry.
_DOC_PATH = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")
MAX_PATH_BYTES = 1024


class RoomKey(NamedTuple):
    workspace_id: str
    path: str  # "" for the workspace's main document

    def __str__(self) -> str:
        return f"{self.workspace_id}/{self.path}" if self.path else self.workspace_id

    @staticmethod
    def valid_path(path: str) -> bool:
        """A document path: 1 to 1,024 characters without control characters, at most 1,024
        bytes of UTF-8."""
        return (
            bool(_DOC_PATH.fullmatch(path)) and len(path.encode("utf-8", "surrogatepass")) <= MAX_PATH_BYTES
        )

    @classmethod
    def parse(cls, name: str) -> RoomKey | None:
        """A room name as y-websocket clients write it: ``ws-1`` (the workspace's main
        document) or ``ws-1/notes/a.md``; None if it is not a valid one."""
        workspace_id, _, path = name.partition("/")
        return cls.checked(workspace_id, path)

    @classmethod
    def checked(cls, workspace_id: str, path: str) -> RoomKey | None:
        """The room of a workspace id and a document path (slashes around it ignored); None if
        either is not valid."""
        path = path.strip("/")
        if not is_workspace_id(workspace_id) or (path and not cls.valid_path(path)):
            return None
        return cls(workspace_id, path)


class Room:
    """Applies client messages to the document and relays them to the room's other clients.

    Updates accepted in one event-loop turn are relayed together, at the end of the turn, each as
    the message its client sent: framed once for every receiver and written to each in one
    transport write, never back to the connection that sent them.

    ``doc`` was built from stored updates of ``loaded_bytes`` bytes in all (0 for a new one);
    ``clocks``: its state vector (client -> clock), if read already (a document of many clients
    takes long to read: its loader reads it off the event loop).
    """

    def __init__(
        self,
        key: RoomKey,
        document_id: int,
        doc: Doc[Any],
        *,
        on_update: Callable[[int, bytes, Callable[[], None]], None],
        on_broken: Callable[[Room], None],
        loaded_bytes: int,
        clocks: dict[int, int] | None = None,
    ) -> None:
        self.key = key
        self.document_id = document_id
        self.doc = doc
        self.awareness = Awareness(doc)
        self.awareness.set_local_state(None)  # the server itself has no presence
        self.connections: set[Connection] = set()
        self._on_update = on_update  # (document id, update, relay): an update was accepted
        self._on_broken = on_broken  # pycrdt failed on the document: reload it from storage
        self.broken = False
        # Set when other instances serve this room too: awareness changes of our clients.
        self.on_awareness: Callable[[Room, bytes], None] | None = None
        self._remote_awareness: dict[int, float] = {}  # client id -> when last renewed
        self._server_ids: set[int] = set()  # awareness client ids the server owns (agents)
        self._owners: dict[int, Connection] = {}  # awareness client id -> the connection that set it
        # origin, update, its message as received, when accepted here
        self._pending: list[tuple[Connection | None, bytes, bytes | None, float | None]] = []
        self._full_state: bytes | None = None
        self._full_state_step2: bytes | None = None
        self._step1: bytes | None = None  # sync step 1 with the document's state vector
        self.version = 0  # counts the updates applied, so that views of the document can be cached
        # (version, the state vector then as client -> clock, its clocks added up)
        self._state: tuple[int, dict[int, int], int] = (-1, {}, 0)
        if clocks is not None:
            self._state = (0, clocks, sum(clocks.values()))
        # The bytes of the updates the document holds: those it was loaded from (``loaded_bytes``)
        # and every one applied since.
        self._bytes = loaded_bytes
        self._loop = asyncio.get_running_loop()
        self.unload_handle: asyncio.TimerHandle | None = None

    # -- membership -------------------------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        """Start the handshake: our state vector (the client answers with what we lack) and the
        presence of everyone already here."""
        self.connections.add(conn)
        if self._step1 is None:  # encoded once per version: a storm of joiners shares it
            self._step1 = protocol.sync_step1(self.doc.get_state())
        conn.send(self._step1)
        if self.awareness.states:
            update = self.awareness.encode_awareness_update(list(self.awareness.states))
            conn.send(protocol.awareness(update))

    def leave(self, conn: Connection) -> None:
        """Remove a connection and, for everyone else, the presence it announced."""
        self.connections.discard(conn)
        if conn.awareness_ids:
            for cid in conn.awareness_ids:
                self._owners.pop(cid, None)
            ids = [cid for cid in conn.awareness_ids if cid in self.awareness.states]
            conn.awareness_ids = None
            if ids:
                self.awareness.remove_awareness_states(ids, origin=conn)
                update = self.awareness.encode_awareness_update(ids)
                self._broadcast(protocol.awareness(update), conn)
                if self.on_awareness is not None:
                    self.on_awareness(self, update)

    def eject(self, conn: Connection, code: CloseCode) -> None:
        """Remove a connection at once, withdraw its presence, and close it with ``code``."""
        self.leave(conn)
        conn.close(code)

    # -- messages ---------------------------------------------------------------------------------

    async def receive(
        self,
        conn: Connection,
        message: protocol.Message,
        frame: bytes,
        facts: UpdateFacts | None,
        *,
        spent: Callable[[float], None] | None = None,
    ) -> None:
        """Handle one message from ``conn`` (``frame``: the message as received), whose payload
        passed ``yjs_format.check_message`` (``facts``: what it found in an update; None for
        one from a client that could not write, which is refused as read-only). Raises
        ``ProtocolError`` for a message the document cannot take; the document and everyone's
        presence are then as they were. ``spent`` is told the seconds an update applied in
        parts has cost so far, after each turn, and may stop it (see ``apply_update``)."""
        if message.type is MessageType.SYNC:
            if message.sync_type is SyncType.STEP1:
                conn.send(self._sync_step2(message.payload))
            elif conn.can_write and facts is not None:  # None: read while it could not write
                relayable = frame if message.sync_type is SyncType.UPDATE else None
                await self.apply_update(message.payload, facts, origin=conn, frame=relayable, spent=spent)
            elif message.payload != protocol.EMPTY_UPDATE:
                # Read-only: not applied, stored or relayed, and the client is told (y-protocols auth).
                conn.send(READ_ONLY)
        elif message.type is MessageType.AWARENESS:
            self._apply_awareness(conn, message.payload, frame)
        elif message.type is MessageType.QUERY_AWARENESS and self.awareness.states:
            update = self.awareness.encode_awareness_update(list(self.awareness.states))
            conn.send(protocol.awareness(update))
        # AUTH messages are server-to-client only; a client sending one is ignored.

    async def apply_update(
        self,
        update: bytes,
        facts: UpdateFacts,
        *,
        origin: Connection | None = None,
        frame: bytes | None = None,
        spent: Callable[[float], None] | None = None,
    ) -> None:
        """Apply a client's update (checked with ``yjs_format.check_update``, which gave
        ``facts``), log it for storage, and relay it to every other connection (``frame``: the
        client's sync-update frame carrying it, relayed as received when the update is alone in
        its turn). An update that names a parent type the document does not hold is refused
        (``ProtocolError``): Yrs would keep it waiting and fail the update that later fills the gap.

        An update whose structs and deletions could cost Yrs more than ``PART_SECONDS`` in this
        document (weighed for the document: what it holds of the document already counts as the
        document's) is applied in parts of at most that cost, ``TURN_SECONDS`` of them to an
        event-loop turn, one such update at a time on the loop (the others wait their turn);
        what one turn applied is logged and relayed as one update. After each
        turn ``spent`` is told the seconds applying has cost so far; if it raises (the client's
        time allowance, ``FrameRejected``), the rest is not applied and the exception goes on.

        The ``on_update`` listener gets the relay as a function, and calls it at once or, in
        synchronous mode, once the update is stored."""
        if update == protocol.EMPTY_UPDATE:
            return
        _, clocks, units = self._state_vector()
        missing = facts.missing_parent(clocks)
        if missing is not None:
            raise ProtocolError(
                f"the update names {missing} as a parent type, which the document does not hold"
            )
        missing = facts.missing_dependency(clocks)
        if missing is not None:
            # Yrs would keep it waiting, and apply all that waits with the update that fills the
            # gap, at once: a cost no bound on that update would see.
            raise ProtocolError(
                f"the update needs {missing}, which the document does not hold: send what it lacks first"
            )
        if facts.structs + facts.deletions > 1:  # one struct or deletion is applied whole
            costs = struct_costs(min(units + facts.length, BYTE_UNITS * (self._bytes + len(update))))
            weighed, known = facts, None
            if facts.overlaps(clocks):
                # It holds some of what the document holds: what it names there is the document's,
                # and may split or walk as anything else of the document does.
                known = dict(clocks)
                weighed = await check_update_soon(update, known)
                if self.broken:
                    raise DocumentBroken("the document was reloaded while an update was read")
            if update_cost(weighed, costs) > PART_SECONDS:
                # One update in parts at a time on this loop: each holds it TURN_SECONDS a turn.
                async with _in_parts(self._loop):
                    await self._apply_in_turns(update, costs, origin, frame, spent, known)
                return
        self._apply(update)
        self._accepted(update, origin, frame)
        self._advance(facts.clocks)

    def _accepted(self, update: bytes, origin: Connection | None, frame: bytes | None) -> None:
        accepted_at = time.perf_counter()
        self._on_update(self.document_id, update, lambda: self._relay(update, origin, frame, accepted_at))

    def _state_vector(self) -> tuple[int, dict[int, int], int]:
        """The document's state vector (client -> clock) and its clocks added up, as of version
        (the first), kept up to date as client updates are applied, and read from the document
        after anything else."""
        if self._state[0] != self.version:
            clocks = decode_state_vector(self.doc.get_state())
            self._state = (self.version, clocks, sum(clocks.values()))
        return self._state

    def _advance(self, reached: dict[int, int], applied: int = 1) -> None:
        """``applied`` updates whose needs the document held were applied since the state
        vector was last current, reaching ``reached`` (client -> clock: Yrs integrated all they
        hold): their clients' clocks move on. If anything else was applied meanwhile, the state
        vector is read again when next needed."""
        version, clocks, units = self._state
        if version + applied != self.version:
            return
        for client, clock in reached.items():
            before = clocks.get(client, 0)
            if clock > before:
                clocks[client] = clock
                units += clock - before
        self._state = (self.version, clocks, units)

    async def _apply_in_turns(
        self,
        update: bytes,
        costs: Costs,
        origin: Connection | None,
        frame: bytes | None,
        spent: Callable[[float], None] | None,
        known: dict[int, int] | None,
    ) -> None:
        parts = await update_parts_soon(update, known)
        cost = 0.0
        first_turn = True
        while True:
            if self.broken:  # reloaded while this waited: the client syncs the rest again
                raise DocumentBroken("the document was reloaded while an update was applied")
            if origin is not None and origin.is_closing:
                return
            turn_started = time.perf_counter()
            applied: list[bytes] = []
            while parts.left and (not applied or time.perf_counter() - turn_started < TURN_SECONDS):
                piece = parts.take(PART_SECONDS, costs)
                try:
                    self._apply(piece)
                except ProtocolError:
                    # Yrs refused a part (the whole was checked: not expected). What was applied
                    # before it stays the document's: stored and relayed.
                    if applied:
                        self._accepted(merge_updates(*applied), origin, None)
                    raise
                applied.append(piece)
            # The clients of this turn's parts only: a turn's work must not grow with the update's.
            reached, parts.clocks = parts.clocks, {}
            self._advance(reached, len(applied))
            cost += time.perf_counter() - turn_started
            if first_turn and not parts.left:  # all in one turn: the update as it came
                self._accepted(update, origin, frame)
                return
            first_turn = False
            self._accepted(applied[0] if len(applied) == 1 else merge_updates(*applied), origin, None)
            if not parts.left:
                return
            if spent is not None:
                spent(cost)
            # The loop polls for I/O (without waiting, as this task is ready) and runs what is
            # ready before this task goes on.
            await asyncio.sleep(0)

    def apply_remote(self, update: bytes) -> None:
        """Apply an update another instance accepted (and stores): relay it to every
        connection here, without storing it again. The state vector follows it when it is
        small and all it needs is here (else it is read again when next needed)."""
        if update == protocol.EMPTY_UPDATE:
            return
        facts = None
        if self._state[0] == self.version and len(update) <= OFF_LOOP_BYTES:
            with contextlib.suppress(ProtocolError):
                facts = check_update(update)
            if facts is not None and facts.missing_dependency(self._state[1]) is not None:
                facts = None
        self._apply(update)
        if facts is not None:
            self._advance(facts.clocks)
        self._relay(update, None, None, None)

    def _apply(self, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_panic(exc):
                raise
            if not (isinstance(exc, ValueError) and str(exc).startswith("Cannot decode")):
                # Yrs failed part-way: the document may hold part of the update, which is neither
                # stored nor relayed. The room is reloaded from storage without it.
                log.error("document %s: an update failed while applied (%r); reloading", self.key, exc)
                self._break()
            raise ProtocolError(f"invalid Yjs update: {exc}") from None
        self._full_state = self._full_state_step2 = self._step1 = None
        self.version += 1
        self._bytes += len(update)

    def _break(self) -> None:
        """Have the room reloaded from storage, once."""
        if not self.broken:
            self.broken = True
            self._on_broken(self)

    def _relay(
        self, update: bytes, origin: Connection | None, frame: bytes | None, accepted_at: float | None
    ) -> None:
        """Relay ``update`` at the end of this turn (``accepted_at``: when this instance accepted
        it, for the fan-out latency; None for one accepted elsewhere)."""
        if not self._pending:
            self._loop.call_soon(self._relay_pending)
        self._pending.append((origin, update, frame, accepted_at))

    def full_state(self) -> bytes:
        """The whole document as one update, encoded once per version: many joiners at once (a
        reconnect storm) and readers of a large document share one encoding. Raises
        ``DocumentBroken`` (and has the room reloaded) if pycrdt cannot encode the document."""
        if self._full_state is None:
            self._full_state = self._encode(None)
        return self._full_state

    def diff(self, state_vector: bytes) -> bytes:
        """What a document at ``state_vector`` (checked) lacks, as one update."""
        return self._encode(state_vector)

    def _encode(self, state_vector: bytes | None) -> bytes:
        try:
            return self.doc.get_update() if state_vector is None else self.doc.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"invalid state vector: {exc}") from None
        except BaseException as exc:
            if not is_panic(exc):
                raise
            log.error("document %s cannot be encoded (%r); reloading", self.key, exc)
            self._break()
            raise DocumentBroken(f"the document cannot be encoded: {exc}") from None

    def _sync_step2(self, state_vector: bytes) -> bytes:
        """Sync step 2: what a client with ``state_vector`` lacks. Clients with an empty document
        share one frame per version."""
        if state_vector == b"\x00":
            if self._full_state_step2 is None:
                self._full_state_step2 = protocol.sync_step2(self.full_state())
            return self._full_state_step2
        return protocol.sync_step2(self.diff(state_vector))

    def _apply_awareness(self, conn: Connection, update: bytes, frame: bytes) -> None:
        """A client's awareness update. Only entries that change a presence are applied and
        relayed (y-protocols: a newer clock, or the removal of a present state at the same
        clock): stock y-websocket clients send back every change they see, and relaying those
        echoes would cost every client a frame per client. The connection that changes a presence
        owns it (it is withdrawn when that connection closes). The server's own presences
        (running agents) are not the clients' to set: such entries are dropped."""
        entries = protocol.decode_awareness(update)
        changes = [entry for entry in entries if self._changes(entry)]
        if not changes:
            return
        if len(changes) != len(entries):
            update = protocol.awareness_update([(e.client_id, e.clock, e.state) for e in changes])
            frame = protocol.awareness(update)
        for entry in changes:
            previous = self._owners.pop(entry.client_id, None)
            if previous is not None and previous.awareness_ids is not None:
                previous.awareness_ids.discard(entry.client_id)
            if entry.state is not None:
                self._owners[entry.client_id] = conn
                if conn.awareness_ids is None:
                    conn.awareness_ids = set()
                conn.awareness_ids.add(entry.client_id)
        try:
            self.awareness.apply_awareness_update(update, origin=conn)
        except Exception as exc:  # noqa: BLE001 - pycrdt refused what decode_awareness let through
            raise ProtocolError(f"invalid awareness update: {exc}") from None
        self._broadcast(frame, conn)
        if self.on_awareness is not None:
            self.on_awareness(self, update)

    def _changes(self, entry: protocol.AwarenessEntry) -> bool:
        if entry.client_id in self._server_ids:
            return False
        clock = self.awareness.meta.get(entry.client_id, {}).get("clock", -1)
        present = entry.client_id in self.awareness.states
        return entry.clock > clock or (entry.clock == clock and entry.state is None and present)

    def apply_remote_awareness(self, update: bytes, entries: list[protocol.AwarenessEntry]) -> None:
        """Presence changes of clients connected to another instance."""
        now = time.monotonic()
        for entry in entries:
            if entry.state is None:
                self._remote_awareness.pop(entry.client_id, None)
            else:
                self._remote_awareness[entry.client_id] = now
        self.awareness.apply_awareness_update(update, origin=None)
        self._broadcast(protocol.awareness(update), None)

    def local_awareness_update(self) -> bytes | None:
        """The presence of this instance's own clients, for an instance that just loaded the room."""
        ids = [
            cid
            for conn in self.connections
            for cid in conn.awareness_ids or ()
            if cid in self.awareness.states
        ]
        return self.awareness.encode_awareness_update(ids) if ids else None

    def expire_remote_awareness(self, renewed_before: float) -> None:
        """Withdraw other instances' clients whose presence was not renewed since ``renewed_before``
        (their instance stopped, or their removal was lost)."""
        stale = [cid for cid, seen in self._remote_awareness.items() if seen < renewed_before]
        for cid in stale:
            del self._remote_awareness[cid]
        stale = [cid for cid in stale if cid in self.awareness.states]
        if stale:
            self.awareness.remove_awareness_states(stale, origin=None)
            self._broadcast(protocol.awareness(self.awareness.encode_awareness_update(stale)), None)

    def set_server_awareness(self, client_id: int, clock: int, state: dict[str, Any] | None) -> None:
        """Publish (``state``) or withdraw (``None``) a presence owned by the server, such as a
        running agent's, to everyone in the room."""
        self._server_ids.add(client_id)
        update = protocol.awareness_update([(client_id, clock, state)])
        self.awareness.apply_awareness_update(update, origin=None)
        self._broadcast(protocol.awareness(update), None)

    def _broadcast(self, message: bytes, exclude: Connection | None) -> None:
        """Send ``message`` to every connection but ``exclude``, framed once for all of them."""
        framed = Framed([message]) if len(self.connections) > 2 else message
        for other in self.connections:
            if other is not exclude:
                other.send(framed)

    def _relay_pending(self) -> None:
        """Relay the updates accepted in this turn of the loop, each as the sync-update message its
        client sent (or one built for it), in the order accepted, to every connection but the
        update's own: framed once, and one write per receiver (``Framed``)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        if len(pending) == 1:
            origin, update, frame, _ = pending[0]
            self._broadcast(frame or protocol.sync_update(update), origin)
        else:
            self._relay_many(pending)
        accepted = [at for *_, at in pending if at is not None]
        if accepted:
            metrics.fanned_out(accepted)

    def _relay_many(self, pending: list[tuple[Connection | None, bytes, bytes | None, float | None]]) -> None:
        everything = Framed([frame or protocol.sync_update(update) for _, update, frame, _ in pending])
        own: dict[Connection | None, list[int]] = {}  # each sender's updates, by index in ``pending``
        for i, entry in enumerate(pending):
            own.setdefault(entry[0], []).append(i)
        for conn in self.connections:
            if conn not in own:
                conn.send(everything)
        for sender, indices in own.items():
            if sender is not None and len(indices) < len(pending) and sender in self.connections:
                sender.send(everything.without(indices))
