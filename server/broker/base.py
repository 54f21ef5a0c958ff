"""The broker: what one instance tells the others, and hears from them.

``Broker`` itself is the in-process default for a single instance: nothing to relay, presence
is this instance's own. ``RedisBroker`` relays through Redis when ``REDIS_URL`` is set. The rest
of the server only calls the methods below and sets the ``on_*`` callbacks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from enum import IntEnum
from typing import Any


class RoomMessage(IntEnum):
    """What travels on a document's pub/sub channel besides stream updates."""

    AWARENESS = 1  # an awareness update
    STATE = 2  # state vector + delete-set digest: "send me what I lack"
    HELLO = 3  # as STATE, from an instance that just loaded the room: also "send me your awareness"
    UPDATE = 4  # a repair: what the receiver of a STATE lacked (not stored again)
    REPLY = 5  # as STATE, in answer to one: answered with an UPDATE, never with another REPLY


def _ignore(*args: Any) -> None:
    return None


class Broker:
    """Single instance: every method is local; nothing comes from elsewhere."""

    kind = "memory"

    def __init__(self, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        # Set by the app before entering.
        self.on_update: Callable[[int, bytes], None] = _ignore  # document id, update
        self.on_room_message: Callable[[int, RoomMessage, bytes], None] = _ignore
        self.on_event: Callable[[str, int, str], None] = _ignore  # topic, event id, frame
        self.on_control: Callable[[str, dict[str, Any]], None] = _ignore  # operation, arguments
        self.on_presence: Callable[[str, str, str, bool], None] = _ignore  # ws, user, name, joined
        self.on_reconnect: Callable[[], None] = _ignore

    async def __aenter__(self) -> Broker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    # -- documents --------------------------------------------------------------------------------

    async def follow(self, document_id: int) -> list[bytes]:
        """Start relaying a freshly loaded document; return the updates other instances have
        published for it (some of them perhaps not stored yet)."""
        return []

    def unfollow(self, document_id: int) -> None:
        """The document was unloaded here."""

    def publish_update(self, document_id: int, update: bytes, seq: int) -> None:
        """An update accepted here (``seq``: its number in this instance's write order)."""

    def publish_room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        """Awareness and state-vector exchange for a loaded document."""

    def stored(self, seq: int) -> None:
        """Every update up to write sequence number ``seq`` is in the database."""

    # -- events and cluster-wide changes ----------------------------------------------------------

    def publish_event(self, topic: str, event_id: int, text: str) -> None:
        """An event was stored and sent to this instance's subscribers."""

    def publish_control(self, operation: str, arguments: dict[str, Any]) -> None:
        """A change every instance must apply (an access change, a deletion)."""

    # -- presence ---------------------------------------------------------------------------------

    def set_present(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        """The user's first connection to the workspace on this instance opened (``present``) or
        its last one closed. ``on_presence`` is called when that changes the cluster's view."""
        self.on_presence(workspace_id, user_id, name, present)

    async def drain_presence(self, timeout: float = 2.0) -> None:
        """At shutdown: wait (bounded) until the cluster knows of every presence change."""

    async def online(self, workspace_id: str) -> set[str] | None:
        """Users connected to the workspace on any instance; None when only this instance knows."""
        return None

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind, "instance": self.instance_id, "connected": self.connected}
