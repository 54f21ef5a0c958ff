"""Running agents as collaborators: an awareness state in their workspace's main document.

Each agent gets a server-owned awareness client id; its state is
``{"user": {"name", "color"}, "agent": {"id", "status", "progress", "current_step"}}``, updated on
every execution update and removed ``linger`` seconds after completion. States are renewed well
within the 30 s after which Yjs clients drop a silent peer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .events.models import AGENT_EVENT_TYPES
from .room import Room
from .vocabulary import AgentStatus

COLORS = ("#30bced", "#6eeb83", "#ffbc42", "#ecd444", "#ee6352", "#9ac2c9", "#8acb88", "#1be7ff")


def agent_client_id(agent_id: str) -> int:
    """A stable awareness client id for the agent (53 bits, as Yjs client ids)."""
    return int.from_bytes(hashlib.sha256(f"agent:{agent_id}".encode()).digest()[:7], "big") & ((1 << 53) - 1)


@dataclass(slots=True)
class _Shown:
    workspace_id: str
    state: dict[str, Any]
    clock: int = 0
    removal: asyncio.TimerHandle | None = None


class AgentPresence:
    """Shows running agents in their workspace's main document. A listener of the event hub: it
    follows the agent events delivered on this instance, local or relayed from another, so every
    instance shows every agent. It knows the loaded main documents from the room manager's
    ``room_loaded`` / ``room_unloaded``.

    Arguments:
        linger: seconds a finished agent stays shown.
        renew_interval: seconds between renewals of the shown states (Yjs clients drop a peer
            not renewed for 30 s).
    """

    def __init__(self, *, linger: float = 5.0, renew_interval: float = 15.0) -> None:
        self.linger = linger
        self.renew_interval = renew_interval
        self._shown: dict[str, _Shown] = {}
        self._rooms: dict[str, Room] = {}  # workspace id -> its loaded main document
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AgentPresence:
        self._task = asyncio.create_task(self._renew(), name="agent-presence")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        for shown in self._shown.values():
            if shown.removal is not None:
                shown.removal.cancel()

    # -- listening --------------------------------------------------------------------------------

    def event(self, _topic: str, message_type: str, text: str) -> None:
        """An event delivered on this instance (the event hub's listener)."""
        if message_type not in AGENT_EVENT_TYPES:
            return
        data = json.loads(text)["data"]
        shown = self._shown.get(data["agent_id"])
        if message_type == "agent_execution_start":
            progress, step = 0.0, ""
        elif message_type == "agent_execution_update":
            progress, step = data["progress"], data["current_step"]
        else:
            previous = shown.state["agent"] if shown is not None else {}
            completed = data["status"] == AgentStatus.COMPLETED
            progress = 100.0 if completed else previous.get("progress", 0.0)
            step = previous.get("current_step", "")
        self.show(data["agent_id"], data.get("workspace_id"), data["status"], progress, step)

    def room_loaded(self, room: Room) -> None:
        """A document was loaded: a workspace's main document shows the workspace's agents."""
        if room.key.path:
            return
        self._rooms[room.key.workspace_id] = room
        for agent_id, shown in self._shown.items():
            if shown.workspace_id == room.key.workspace_id:
                room.set_server_awareness(agent_client_id(agent_id), shown.clock, shown.state)

    def room_unloaded(self, room: Room) -> None:
        if self._rooms.get(room.key.workspace_id) is room:
            del self._rooms[room.key.workspace_id]

    # -- showing ----------------------------------------------------------------------------------

    def show(
        self,
        agent_id: str,
        workspace_id: str | None,
        status: str,
        progress: float,
        current_step: str | None,
    ) -> None:
        """Show (or update) the agent in its workspace's main document."""
        shown = self._shown.get(agent_id)
        if shown is not None and shown.workspace_id != workspace_id:
            self._remove(agent_id)
            shown = None
        if workspace_id is None:
            return
        state = {
            "user": {"name": f"Agent {agent_id}", "color": COLORS[agent_client_id(agent_id) % len(COLORS)]},
            "agent": {
                "id": agent_id,
                "status": status,
                "progress": progress,
                "current_step": current_step or "",
            },
        }
        if shown is None:
            shown = self._shown[agent_id] = _Shown(workspace_id, state)
        shown.state = state
        if shown.removal is not None:
            shown.removal.cancel()
            shown.removal = None
        self._send(agent_id, shown)
        if AgentStatus(status).is_final:
            shown.removal = asyncio.get_running_loop().call_later(self.linger, self._remove, agent_id)

    def _send(self, agent_id: str, shown: _Shown) -> None:
        shown.clock += 1
        room = self._rooms.get(shown.workspace_id)
        if room is not None:
            room.set_server_awareness(agent_client_id(agent_id), shown.clock, shown.state)

    def _remove(self, agent_id: str) -> None:
        shown = self._shown.pop(agent_id, None)
        if shown is None:
            return
        room = self._rooms.get(shown.workspace_id)
        if room is not None:
            room.set_server_awareness(agent_client_id(agent_id), shown.clock + 1, None)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            for agent_id, shown in list(self._shown.items()):
                self._send(agent_id, shown)
