"""Every Redis key and channel name the server uses, under one configurable prefix.

Documents are named by their database id, which every instance sharing the database agrees on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "collab"

    # -- documents --------------------------------------------------------------------------------

    def updates(self, document_id: int) -> str:
        """Stream of a document's updates: fields ``i`` (instance), ``s`` (the instance's write
        sequence number of the newest update in the entry) and ``u`` (the update)."""
        return f"{self.prefix}:doc:{document_id}:updates"

    def room(self, document_id: int) -> str:
        """Pub/sub channel of a document's awareness and state-vector exchange."""
        return f"{self.prefix}:doc:{document_id}:room"

    # -- events and cluster commands ----------------------------------------------------------

    @property
    def events(self) -> str:
        """Pub/sub channel of event-channel events: ``{"i": instance, "t": topic, "n": id, "x":
        frame}``."""
        return f"{self.prefix}:events"

    @property
    def commands(self) -> str:
        """Pub/sub channel of cluster commands: ``{"i": instance, "c": command}``."""
        return f"{self.prefix}:commands"

    # -- presence ---------------------------------------------------------------------------------

    def workspace_presence(self, workspace_id: str) -> str:
        """Hash: user id -> number of instances where the user has a connection."""
        return f"{self.prefix}:presence:ws:{workspace_id}"

    def instance_presence(self, instance_id: str) -> str:
        """Hash: ``workspace id NUL user id`` -> display name, for the users connected to one instance."""
        return f"{self.prefix}:presence:instance:{instance_id}"

    # -- instances --------------------------------------------------------------------------------

    @property
    def instances(self) -> str:
        """Sorted set: instance id -> time of its last heartbeat (ms since the epoch)."""
        return f"{self.prefix}:instances"

    @property
    def watermarks(self) -> str:
        """Hash: instance id -> write sequence number up to which its updates are stored."""
        return f"{self.prefix}:stored"

    def instance_documents(self, instance_id: str) -> str:
        """Set of the documents an instance has published updates to."""
        return f"{self.prefix}:instance:{instance_id}:documents"

    def wake(self, instance_id: str) -> str:
        """Stream an instance writes to itself to interrupt its own blocking stream read."""
        return f"{self.prefix}:instance:{instance_id}:wake"

    def takeover(self, instance_id: str) -> str:
        """Lock held by the instance cleaning up after a dead one."""
        return f"{self.prefix}:instance:{instance_id}:takeover"
