"""The broker: what one instance tells the others, and hears from them.

``Broker`` itself is the in-process default for a single instance: nothing to relay, presence is
this instance's own. ``RedisBroker`` relays through Redis when ``REDIS_URL`` is set. The rest of
the server calls the methods below to tell the others; what the others say arrives at the
``BrokerListener`` given to ``running`` where the app is assembled.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from enum import IntEnum
from typing import Any, Protocol


class RoomMessage(IntEnum):
    """What travels on a document's pub/sub channel besides stream updates."""

    AWARENESS = 1  # an awareness update
    STATE = 2  # state vector + delete-set digest: "send me what I lack"
    HELLO = 3  # as STATE, from an instance that just loaded the room: also "send me your awareness"
    UPDATE = 4  # a repair: what the receiver of a STATE lacked (not stored again)
    REPLY = 5  # as STATE, in answer to one: answered with an UPDATE, never with another REPLY


class BrokerListener(Protocol):
    """What the other instances say, delivered on the event loop. Methods must not raise."""

    def remote_update(self, document_id: int, update: bytes) -> None:
        """An update another instance accepted (and stores) for a document followed here."""

    def room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        """Awareness or a state-vector exchange message for a document followed here."""

    def remote_event(self, topic: str, event_id: int, text: str) -> None:
        """An event another instance stored (``text``: the frame its subscribers got)."""

    def command(self, payload: dict[str, Any]) -> None:
        """A cluster command another instance ran (``cluster.Cluster`` decodes it)."""

    def presence_changed(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        """The cluster's view of who is in a workspace changed (first connection anywhere, or
        last one gone)."""

    def reconnected(self) -> None:
        """Messages may have been lost while the link was down: compare states now."""

    async def orphaned_updates(self, rows: list[tuple[int, bytes]]) -> None:
        """``(document id, update)`` rows a stopped instance accepted but never stored: store
        them; raise if that fails (the takeover is then retried)."""


class Broker:
    """Single instance: every method is local; nothing comes from elsewhere."""

    kind = "memory"

    def __init__(self, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._listener: BrokerListener | None = None

    @contextlib.asynccontextmanager
    async def running(self, listener: BrokerListener) -> AsyncIterator[Broker]:
        """Run the broker, delivering what other instances say to ``listener``; on exit, tell
        them this instance has left (after what was queued for them is sent)."""
        self._listener = listener
        await self._start()
        try:
            yield self
        finally:
            await self._stop()

    async def _start(self) -> None:
        return None

    async def _stop(self) -> None:
        return None

    @property
    def listener(self) -> BrokerListener:
        if self._listener is None:
            raise RuntimeError("the broker is not running")
        return self._listener

    @property
    def connected(self) -> bool:
        return True

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "down" | "disabled", ...}`` for the health checks."""
        return {"status": "disabled", "detail": "REDIS_URL is not set; using the in-process broker"}

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "instance": self.instance_id, "connected": self.connected}

    # -- documents --------------------------------------------------------------------------------

    @property
    def relays(self) -> bool:
        """Whether other instances may serve the same documents (and rooms must be compared)."""
        return False

    async def follow(self, document_id: int) -> list[bytes]:  # noqa: ARG002 - nothing relayed here
        """Start relaying a freshly loaded document; return the updates other instances have
        published for it (some of them perhaps not stored yet)."""
        return []

    def unfollow(self, document_id: int) -> None:
        """The document was unloaded here."""

    def publish_update(self, document_id: int, update: bytes, seq: int) -> None:
        """An update accepted here (``seq``: its number in this instance's write order)."""

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        """Awareness and state-vector exchange for a loaded document."""

    def note_stored(self, seq: int) -> None:
        """Every update up to write sequence number ``seq`` is in the database."""

    # -- events and cluster commands --------------------------------------------------------------

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        """An event was stored and sent to this instance's subscribers."""

    def publish_command(self, payload: dict[str, Any]) -> None:
        """A cluster command every other instance must apply (JSON-able)."""

    # -- presence ---------------------------------------------------------------------------------

    def set_present(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        """The user's first connection to the workspace on this instance opened (``present``) or
        its last one closed. The listener hears when that changes the cluster's view."""
        self.listener.presence_changed(workspace_id, user_id, name, present)

    async def drain_presence(self, timeout: float = 2.0) -> None:
        """At shutdown: wait (bounded) until the cluster knows of every presence change."""

    async def online(self, workspace_id: str) -> set[str] | None:  # noqa: ARG002 - one instance
        """Users connected to the workspace on any instance; None when only this instance knows."""
        return None
