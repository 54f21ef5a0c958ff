"""Who is in a workspace: ``user_joined`` when a user's first connection to it opens (document or
event channel), ``user_left`` when the last one closes, however many tabs it had."""

from __future__ import annotations

from collections import Counter

from .auth import Principal
from .events.hub import EventHub, workspace_topic
from .events.models import UserPresenceData


class Presence:
    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self._counts: Counter[tuple[str, str]] = Counter()

    def online(self, workspace_id: str) -> set[str]:
        return {user for (workspace, user) in self._counts if workspace == workspace_id}

    def enter(self, workspace_id: str, user: Principal) -> None:
        key = (workspace_id, user.user_id)
        self._counts[key] += 1
        if self._counts[key] == 1:
            self._announce("user_joined", workspace_id, user)

    def leave(self, workspace_id: str, user: Principal) -> None:
        key = (workspace_id, user.user_id)
        if self._counts[key] <= 0:
            self._counts.pop(key, None)
            return
        self._counts[key] -= 1
        if self._counts[key] == 0:
            del self._counts[key]
            self._announce("user_left", workspace_id, user)

    def _announce(self, kind: str, workspace_id: str, user: Principal) -> None:
        data = UserPresenceData(workspace_id=workspace_id, user_id=user.user_id, username=user.name[:500])
        self.hub.publish_soon(workspace_topic(workspace_id), kind, data.model_dump(mode="json"))
