"""Who is in a workspace: ``user_joined`` when a user's first connection to it opens (document or
event channel), ``user_left`` when the last one closes, however many tabs it had.

This instance counts its own connections per (workspace, user); the broker turns this
instance's first/last connection into the cluster's view (with one instance, the same thing)
and calls back when that view changes, which is when the event is announced.
"""

from __future__ import annotations

from collections import Counter

from .auth import Principal
from .broker import Broker
from .events.hub import EventHub, workspace_topic
from .events.models import UserPresenceData


class Presence:
    """Counts this instance's connections per (workspace, user); the broker's listener calls
    ``announce`` when the cluster's view changes."""

    def __init__(self, hub: EventHub, broker: Broker) -> None:
        self.hub = hub
        self.broker = broker
        self._counts: Counter[tuple[str, str]] = Counter()

    def local(self, workspace_id: str) -> set[str]:
        """Users connected to the workspace on this instance."""
        return {user for (workspace, user) in self._counts if workspace == workspace_id}

    def online_here(self) -> int:
        """How many (workspace, user) pairs have a connection on this instance."""
        return len(self._counts)

    async def online(self, workspace_id: str) -> set[str]:
        """Users connected to the workspace on any instance (this one's, when the others'
        cannot be known: Redis is down)."""
        users = await self.broker.online(workspace_id)
        return self.local(workspace_id) if users is None else users

    def enter(self, workspace_id: str, user: Principal) -> None:
        key = (workspace_id, user.user_id)
        self._counts[key] += 1
        if self._counts[key] == 1:
            self.broker.set_present(workspace_id, user.user_id, user.name[:500], True)

    def leave(self, workspace_id: str, user: Principal) -> None:
        key = (workspace_id, user.user_id)
        if self._counts[key] <= 0:
            self._counts.pop(key, None)
            return
        self._counts[key] -= 1
        if self._counts[key] == 0:
            del self._counts[key]
            self.broker.set_present(workspace_id, user.user_id, user.name[:500], False)

    def announce(self, workspace_id: str, user_id: str, name: str, joined: bool) -> None:
        """The user's first connection to the workspace in the cluster opened (``joined``), or
        its last one closed: ``user_joined`` / ``user_left``."""
        data = UserPresenceData(workspace_id=workspace_id, user_id=user_id, username=name)
        kind = "user_joined" if joined else "user_left"
        self.hub.publish_soon(workspace_topic(workspace_id), kind, data.model_dump(mode="json"))
