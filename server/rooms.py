"""RoomManager: loads rooms single-flight, serves connections, unloads idle rooms after a flush."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from pycrdt import Doc

from crdt_store import Store, StoreError

from . import metrics
from .auth import Principal
from .channel import Channel, ChannelClosed, FrameRejected
from .close_codes import (
    CLOSE_1000_NORMAL,
    CLOSE_1011_INTERNAL_ERROR,
    CLOSE_1011_RELOADED,
    CLOSE_1012_SERVICE_RESTART,
    CLOSE_1013_STORE_UNAVAILABLE,
    CLOSE_4400_BAD_MESSAGE,
    CLOSE_4401_TOKEN_EXPIRED,
    CLOSE_4403_ACCESS_REVOKED,
    CLOSE_4404_DELETED,
    CloseCode,
)
from .connection import Connection
from .persistence import UpdateWriter
from .protocol import KEEPALIVE, ProtocolError, decode
from .replication import Replication
from .room import DocumentBroken, Room, RoomKey, load_updates
from .yjs_format import OFF_LOOP_BYTES, check_message, decode_state_vector

log = logging.getLogger(__name__)


class RoomManager:
    """Owns every loaded room of this instance.

    Arguments:
        store: where documents are loaded from.
        writer: where accepted updates go to be stored.
        replication: keeps rooms in step with other instances (none: this instance is alone).
        unload_grace: seconds an empty room stays loaded (a reload in that time costs nothing).
        heartbeat_interval: a connection that has been sent nothing for this long gets a
            keep-alive frame, so idle clients (the stock y-websocket client reconnects after 30 s
            of silence) stay connected.
        message_queue_size: outbound frames queued per connection before it is cut off.
        message_queue_bytes: outbound bytes queued per connection before it is cut off.
        on_room_loaded: called with each room once it is loaded, before anyone is served.
        on_room_unloaded: called with each room once it is gone.
        on_document_created: called with the key of a document that did not exist before.
        on_enter, on_leave: called with (workspace id, principal) as a connection opens and closes.
    """

    def __init__(
        self,
        store: Store,
        writer: UpdateWriter,
        *,
        replication: Replication | None = None,
        unload_grace: float = 5.0,
        heartbeat_interval: float = 15.0,
        message_queue_size: int = 1000,
        message_queue_bytes: int = 16 * 1024 * 1024,
        on_room_loaded: Callable[[Room], None] | None = None,
        on_room_unloaded: Callable[[Room], None] | None = None,
        on_document_created: Callable[[RoomKey], None] | None = None,
        on_enter: Callable[[str, Principal], None] | None = None,
        on_leave: Callable[[str, Principal], None] | None = None,
    ) -> None:
        self.on_room_loaded = on_room_loaded
        self.on_room_unloaded = on_room_unloaded
        self.on_document_created = on_document_created
        self.on_enter = on_enter
        self.on_leave = on_leave
        self.store = store
        self.writer = writer
        self.replication = replication
        self.unload_grace = unload_grace
        self.heartbeat_interval = heartbeat_interval
        self.message_queue_size = message_queue_size
        self.message_queue_bytes = message_queue_bytes
        self.rooms: dict[RoomKey, Room] = {}
        self._loading: dict[RoomKey, asyncio.Future[Room]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> RoomManager:
        if self._heartbeat is not None:
            raise RuntimeError("RoomManager already running")
        self._heartbeat = asyncio.create_task(self._keep_alive(), name="room-heartbeat")
        # pycrdt's first Doc imports anyio's asyncio backend (for its lock): about a quarter of
        # what the first client after a start would wait for, paid here instead.
        Doc()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        for conn in list(self.connections()):
            conn.close(CLOSE_1012_SERVICE_RESTART)
        for room in self.rooms.values():
            if room.unload_handle is not None:
                room.unload_handle.cancel()
        tasks = [*self._tasks]
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            tasks.append(self._heartbeat)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The writer's own exit flushes every update accepted so far.

    def connections(self) -> Iterator[Connection]:
        for room in self.rooms.values():
            yield from room.connections

    # -- loading ----------------------------------------------------------------------------------

    async def get(self, key: RoomKey) -> Room:
        """Return the loaded room, loading it at most once however many clients ask at once."""
        room = self.rooms.get(key)
        if room is not None:
            return room
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key))
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        # shield: one waiter being cancelled (its client left) must not cancel the others' load.
        return await asyncio.shield(loading)

    async def _load(self, key: RoomKey) -> Room:
        stored = await self.store.documents.load(key.workspace_id, key.path)
        doc: Doc[Any] = Doc()
        await load_updates(doc, stored.updates)
        # A large document's state vector (it may hold many clients) in a worker thread: the loop
        # gets the interpreter back every few milliseconds meanwhile. A small one's when needed.
        loaded_bytes = sum(map(len, stored.updates))
        clocks = None
        if loaded_bytes > OFF_LOOP_BYTES:
            clocks = await asyncio.to_thread(lambda: decode_state_vector(doc.get_state()))
        room = Room(
            key,
            stored.id,
            doc,
            on_update=self._accept,
            on_broken=self._reload,
            loaded_bytes=loaded_bytes,
            clocks=clocks,
        )
        if self.replication is not None:
            await self.replication.attach(room)
        self.writer.track(stored.id, tail_count=stored.tail_count, tail_bytes=stored.tail_bytes)
        self.rooms[key] = room
        log.debug("loaded room %s (%d stored updates)", key, len(stored.updates))
        if self.on_room_loaded is not None:
            self.on_room_loaded(room)
        if stored.created and self.on_document_created is not None:
            self.on_document_created(key)
        return room

    def _accept(self, document_id: int, update: bytes, relay: Callable[[], None]) -> None:
        """An update accepted from a client (or REST): store it, relay it to this instance's
        other clients and tell the other instances, at once or, in synchronous mode, once stored."""
        seq = self.writer.append(document_id, update)
        self.writer.when_relayable(seq, relay)
        if self.replication is not None:
            replication = self.replication
            self.writer.when_relayable(seq, lambda: replication.local_update(document_id, update, seq))

    def _reload(self, room: Room) -> None:
        """pycrdt failed on the room's document: store what it accepted, then drop it and close
        its connections (1011); clients reconnect to a document loaded from storage."""
        task = asyncio.create_task(self._drop_broken(room), name=f"reload-{room.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop_broken(self, room: Room) -> None:
        try:
            await asyncio.wait_for(self.writer.flush(), timeout=max(5.0, self.writer.retry_max))
        except TimeoutError:
            log.error("room %s: its accepted updates are not stored yet; reloading anyway", room.key)
        if self.rooms.get(room.key) is room:
            self._forget(room)
            self.writer.forget(room.document_id)
        for conn in list(room.connections):
            room.eject(conn, CLOSE_1011_RELOADED)

    def _forget(self, room: Room) -> None:
        del self.rooms[room.key]
        if self.replication is not None:
            self.replication.detach(room)
        if self.on_room_unloaded is not None:
            self.on_room_unloaded(room)

    # -- serving ----------------------------------------------------------------------------------

    async def serve(
        self, key: RoomKey, channel: Channel, *, user: Principal | None = None, can_write: bool = True
    ) -> None:
        """Serve one client until it leaves. The channel is already accepted."""
        try:
            room = await self.get(key)
        except StoreError as exc:
            log.error("room %s could not be loaded: %s", key, exc)
            await _close_quietly(channel, CLOSE_1013_STORE_UNAVAILABLE)
            return
        conn = Connection(
            channel,
            max_queue=self.message_queue_size,
            max_queue_bytes=self.message_queue_bytes,
            user=user,
            can_write=can_write,
        )
        conn.close_at(user.expires_at if user is not None else None, CLOSE_4401_TOKEN_EXPIRED)
        if room.unload_handle is not None:
            room.unload_handle.cancel()
            room.unload_handle = None
        room.join(conn)
        if user is not None and self.on_enter is not None:
            self.on_enter(key.workspace_id, user)
        with metrics.connection_span("sync", conn, user.user_id if user else "-", str(key)):
            try:
                await self._read(room, conn, channel)
            finally:
                conn.close_at(None)
                room.leave(conn)
                if user is not None and self.on_leave is not None:
                    self.on_leave(key.workspace_id, user)
                conn.close(CLOSE_1000_NORMAL)  # no-op when a close code was already chosen
                await conn.closed()
                if not room.connections:
                    self._schedule_unload(room)

    async def exists(self, key: RoomKey) -> bool:
        """Whether the document exists (loaded here, or stored)."""
        return key in self.rooms or await self.store.documents.exists(key.workspace_id, key.path)

    async def open(self, key: RoomKey) -> Room:
        """A room for a server-side reader or writer (REST): loaded like any other, and unloaded
        after the grace period if no client joins."""
        room = await self.get(key)
        if not room.connections and room.unload_handle is None:
            self._schedule_unload(room)
        return room

    # -- access changes ---------------------------------------------------------------------------

    def connections_by_path(self, workspace_id: str) -> dict[str, int]:
        """The workspace's documents loaded here: path -> open connections."""
        return {room.key.path: len(room.connections) for room in self._workspace_rooms(workspace_id)}

    def _workspace_rooms(self, workspace_id: str) -> list[Room]:
        return [room for key, room in self.rooms.items() if key.workspace_id == workspace_id]

    def _user_connections(self, workspace_id: str, user_id: str) -> list[tuple[Room, Connection]]:
        return [
            (room, conn)
            for room in self._workspace_rooms(workspace_id)
            for conn in room.connections
            if conn.user is not None and conn.user.user_id == user_id
        ]

    def revoke_access(self, workspace_id: str, user_id: str) -> None:
        """The user is no longer a member: close their connections to the workspace (4403)."""
        for room, conn in self._user_connections(workspace_id, user_id):
            room.eject(conn, CLOSE_4403_ACCESS_REVOKED)

    def set_write_access(self, workspace_id: str, user_id: str, can_write: bool) -> None:
        """The user's role changed: their open connections may (not) write from now on."""
        for _, conn in self._user_connections(workspace_id, user_id):
            conn.can_write = can_write

    def close_workspace(self, workspace_id: str, document_ids: list[int]) -> None:
        """The workspace was deleted: close its connections (4404) and forget its rooms and
        their unstored updates."""
        self.writer.discard(document_ids)
        for room in self._workspace_rooms(workspace_id):
            self._drop(room)

    def close_document(self, workspace_id: str, path: str, document_id: int) -> None:
        """The document was deleted: close its connections (4404), forget its unstored updates."""
        self.writer.discard([document_id])
        room = self.rooms.get(RoomKey(workspace_id, path))
        if room is not None:
            self._drop(room)

    def _drop(self, room: Room) -> None:
        for conn in list(room.connections):
            room.eject(conn, CLOSE_4404_DELETED)
        if room.unload_handle is not None:
            room.unload_handle.cancel()
        self._forget(room)

    async def _read(self, room: Room, conn: Connection, channel: Channel) -> None:
        # A paced channel counts the server's time each message took against the client's
        # allowance (``limits.PacedChannel``): from decoding it until the room is done with it,
        # the other clients' turns included when it has to wait (a large update checked in a
        # thread, which holds the interpreter as the loop would, or applied in parts).
        charge: Callable[[float], None] | None = getattr(channel, "charge", None)
        # And may stop an update applied in parts once it has cost more than the client may owe.
        check_time: Callable[[float], None] | None = getattr(channel, "check_time", None)
        while not conn.is_closing:
            try:
                frame = await channel.recv()
                if conn.is_closing:  # closed by the server (access revoked) while waiting
                    return
                started = time.perf_counter()
                message = decode(frame)
                facts = await check_message(message, updates=conn.can_write)
                if conn.is_closing:  # closed while a large message was being checked
                    return
                await room.receive(conn, message, frame, facts, spent=check_time)
                if charge is not None:
                    charge(time.perf_counter() - started)
            except ChannelClosed:
                conn.close(CLOSE_1000_NORMAL)
                return
            except FrameRejected as exc:
                log.info("connection %s to %s: %s", conn.id, room.key, exc)
                conn.close(exc.close)
                return
            except DocumentBroken:
                conn.close(CLOSE_1011_RELOADED)
                return
            except ProtocolError as exc:
                log.info("connection %s to %s: malformed message: %s", conn.id, room.key, exc)
                conn.close(CLOSE_4400_BAD_MESSAGE.because(str(exc)))
                return
            except Exception:
                log.exception("connection %s to %s: failed to handle a message", conn.id, room.key)
                conn.close(CLOSE_1011_INTERNAL_ERROR)
                return

    # -- unloading --------------------------------------------------------------------------------

    def _schedule_unload(self, room: Room) -> None:
        if self._closing or self.rooms.get(room.key) is not room:
            return
        if room.unload_handle is not None:
            room.unload_handle.cancel()
        room.unload_handle = asyncio.get_running_loop().call_later(
            self.unload_grace, self._start_unload, room
        )

    def _start_unload(self, room: Room) -> None:
        task = asyncio.create_task(self._unload(room), name=f"unload-{room.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unload(self, room: Room) -> None:
        room.unload_handle = None
        try:
            await asyncio.wait_for(self.writer.flush(), timeout=max(5.0, self.writer.retry_max))
        except TimeoutError:
            # Storage is failing: keep the document in memory (it holds the only copy of the
            # unstored updates) and try again later.
            log.warning("room %s stays loaded: its updates are not stored yet", room.key)
            self._schedule_unload(room)
            return
        if room.connections or self.rooms.get(room.key) is not room:
            return
        self._forget(room)
        self.writer.compact_unloaded(room.document_id)
        log.debug("unloaded room %s", room.key)

    # -- keep-alive -------------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.heartbeat_interval / 2
        while True:
            await asyncio.sleep(period)
            quiet_since = loop.time() - self.heartbeat_interval + period / 2
            for conn in self.connections():
                if conn.last_sent < quiet_since:
                    conn.send(KEEPALIVE)


async def _close_quietly(channel: Channel, code: CloseCode) -> None:
    with contextlib.suppress(ChannelClosed, OSError):
        await channel.close(code)
