"""Cluster commands: changes every instance applies to its own connections.

A command is a typed value. ``Cluster.run`` applies it here and has the broker relay it;
another instance's broker hands it back to ``Cluster.receive``, which applies it there. The same
``apply`` runs everywhere, so an access change made through any instance reaches every
connection it concerns.

``Inbound`` is where everything the other instances say arrives (the broker's listener), and
what each message is handed to.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .broker import Broker, RoomMessage
    from .events.hub import EventHub
    from .persistence import UpdateWriter
    from .presence import Presence
    from .replication import Replication
    from .rooms import RoomManager
    from .workspaces import MemberAccess

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevokeAccess:
    """A member was removed: close their connections to the workspace (4403)."""

    workspace_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class SetWriteAccess:
    """A member's role changed: their open connections may (not) write from now on."""

    workspace_id: str
    user_id: str
    can_write: bool


@dataclass(frozen=True, slots=True)
class CloseWorkspace:
    """The workspace was deleted: close its connections (4404), drop unstored updates."""

    workspace_id: str
    document_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CloseDocument:
    """The document was deleted: close its connections (4404), drop unstored updates."""

    workspace_id: str
    path: str
    document_id: int


@dataclass(frozen=True, slots=True)
class VisibilityChanged:
    """The workspace became open or private: who may see its events and agents is decided again
    (at once for its subscribers when it became private)."""

    workspace_id: str
    private: bool


@dataclass(frozen=True, slots=True)
class SubscribeUser:
    """A stored (REST) subscription changed: apply it to the user's open event connections."""

    user_id: str
    agent_id: str
    subscribed: bool


Command = RevokeAccess | SetWriteAccess | CloseWorkspace | CloseDocument | VisibilityChanged | SubscribeUser
_COMMANDS: dict[str, type[Command]] = {
    cls.__name__: cls
    for cls in (RevokeAccess, SetWriteAccess, CloseWorkspace, CloseDocument, VisibilityChanged, SubscribeUser)
}


def encode(command: Command) -> dict[str, Any]:
    """A command as JSON-able data: its type's name and its fields."""
    return {"command": type(command).__name__, **asdict(command)}


def decode(payload: dict[str, Any]) -> Command:
    """The command ``encode`` wrote. Raises ``ValueError`` for anything else."""
    cls = _COMMANDS.get(str(payload.get("command")))
    if cls is None:
        raise ValueError(f"unknown cluster command {payload.get('command')!r}")
    values = {field.name: payload[field.name] for field in fields(cls)}
    if cls is CloseWorkspace:
        values["document_ids"] = tuple(values["document_ids"])
    return cls(**values)


class Cluster:
    """Runs commands here and on every other instance.

    Arguments:
        broker: relays commands to the other instances.
        rooms: the document connections commands apply to.
        hub: the event connections commands apply to.
        member_access: members' access kept for their next connections, forgotten as it changes.
    """

    def __init__(
        self, broker: Broker, rooms: RoomManager, hub: EventHub, member_access: MemberAccess
    ) -> None:
        self.broker = broker
        self.rooms = rooms
        self.hub = hub
        self.member_access = member_access

    def run(self, command: Command) -> None:
        """Apply ``command`` here and on every other instance."""
        self.apply(command)
        self.broker.publish_command(encode(command))

    def receive(self, payload: dict[str, Any]) -> None:
        """A command another instance ran."""
        try:
            command = decode(payload)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a cluster command this instance does not know: %s", exc)
            return
        self.apply(command)

    def apply(self, command: Command) -> None:
        match command:
            case RevokeAccess(workspace_id, user_id):
                self.member_access.forget(workspace_id, user_id)
                self.rooms.revoke_access(workspace_id, user_id)
                self.hub.access_changed(workspace_id, user_id, narrowed=True)
            case SetWriteAccess(workspace_id, user_id, can_write):
                self.member_access.forget(workspace_id, user_id)
                self.rooms.set_write_access(workspace_id, user_id, can_write)
                self.hub.access_changed(workspace_id, user_id, narrowed=False)
            case CloseWorkspace(workspace_id, document_ids):
                self.member_access.forget(workspace_id, None)
                self.rooms.close_workspace(workspace_id, list(document_ids))
                self.hub.access_changed(workspace_id, None, narrowed=False)
            case VisibilityChanged(workspace_id, private):
                self.hub.access_changed(workspace_id, None, narrowed=private)
            case CloseDocument(workspace_id, path, document_id):
                self.rooms.close_document(workspace_id, path, document_id)
            case SubscribeUser(user_id, agent_id, subscribed):
                self.hub.subscribe_user(user_id, agent_id, subscribed=subscribed)


@dataclass(frozen=True, slots=True)
class Inbound:
    """The broker's listener: hands what other instances say to the component it concerns."""

    replication: Replication
    hub: EventHub
    cluster: Cluster
    presence: Presence
    writer: UpdateWriter

    def remote_update(self, document_id: int, update: bytes) -> None:
        self.replication.remote_update(document_id, update)

    def room_message(self, document_id: int, kind: RoomMessage, payload: bytes) -> None:
        self.replication.room_message(document_id, kind, payload)

    def remote_event(self, topic: str, event_id: int, text: str) -> None:
        self.hub.deliver(topic, event_id, text)

    def command(self, payload: dict[str, Any]) -> None:
        self.cluster.receive(payload)

    def presence_changed(self, workspace_id: str, user_id: str, name: str, present: bool) -> None:
        self.presence.announce(workspace_id, user_id, name, present)

    def reconnected(self) -> None:
        # Cluster commands and agent starts of other instances may have been missed meanwhile.
        self.cluster.member_access.forget_all()
        self.hub.forget_decisions()
        self.replication.check_all()

    async def orphaned_updates(self, rows: list[tuple[int, bytes]]) -> None:
        await self.writer.write(rows)
