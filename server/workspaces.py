"""The workspace service: creating workspaces and joining them are explicit acts, each a store
write followed by its event. Reading who may do what (``access.resolve_access``) never writes.
"""

from __future__ import annotations

import logging
from typing import Any

from crdt_store import Conflict, Store
from crdt_store import workspaces as workspace_store
from crdt_store.workspaces import Member, Workspace

from .access import Access, Role, resolve_access
from .auth import GlobalRole, Principal
from .config import Settings
from .errors import ConflictError, Forbidden, UnknownWorkspace
from .events.hub import EventHub, workspace_topic
from .events.models import WorkspaceUpdateData

log = logging.getLogger(__name__)


class WorkspaceService:
    """Creates and joins workspaces, announcing each change with a ``workspace_update`` event.

    Arguments:
        store: where workspaces and members live.
        settings: ``AUTO_CREATE_WORKSPACES``, and whether tokens are required.
        hub: where the events go.
    """

    def __init__(self, store: Store, settings: Settings, hub: EventHub) -> None:
        self.store = store
        self.settings = settings
        self.hub = hub

    @property
    def may_create(self) -> bool:
        """Whether opening an unknown workspace creates it: without tokens (development), or
        with ``AUTO_CREATE_WORKSPACES=true``."""
        return not self.settings.auth_enabled or self.settings.auto_create_workspaces

    def announce(self, workspace_id: str, update_type: str, **details: Any) -> None:
        """Publish a ``workspace_update`` to the workspace's subscribers."""
        data = WorkspaceUpdateData(workspace_id=workspace_id, update_type=update_type, **details)  # type: ignore[arg-type]
        self.hub.publish_soon(workspace_topic(workspace_id), "workspace_update", data.model_dump(mode="json"))

    async def create(
        self, principal: Principal, *, workspace_id: str, name: str, visibility: str = "open"
    ) -> Workspace:
        """Create a workspace with ``principal`` as its owner. Raises ``ConflictError`` if the id
        is taken."""
        try:
            workspace = await workspace_store.create_workspace(
                self.store.engine,
                workspace_id=workspace_id,
                name=name,
                visibility=visibility,
                owner_id=principal.user_id,
                owner_name=principal.name,
            )
        except Conflict as exc:
            raise ConflictError(str(exc)) from None
        self.announce(workspace_id, "workspace_created", owner_id=principal.user_id, visibility=visibility)
        return workspace

    async def join(self, principal: Principal, workspace_id: str) -> Member:
        """Become an editor of an open workspace (an administrator may join any). A member keeps
        its role. Raises ``UnknownWorkspace`` or ``Forbidden``."""
        engine = self.store.engine
        workspace = await workspace_store.find_workspace(engine, workspace_id=workspace_id)
        if workspace is None:
            raise UnknownWorkspace(workspace_id)
        member = await workspace_store.get_member(
            engine, workspace_id=workspace_id, user_id=principal.user_id
        )
        if member is not None:
            return member
        if workspace.visibility != "open" and not principal.is_admin:
            raise Forbidden(f"workspace {workspace_id!r} is private: an owner must add you")
        member = await workspace_store.set_member(
            engine,
            workspace_id=workspace_id,
            user_id=principal.user_id,
            role=Role.EDITOR.value,
            display_name=principal.name,
            only_if_absent=True,
        )
        self.announce(workspace_id, "member_added", user_id=principal.user_id, role=member.role)
        return member

    async def open(self, principal: Principal, workspace_id: str) -> Access:
        """Access for a client opening one of the workspace's documents. Opening an unknown
        workspace creates it (the caller its owner) on a server without tokens or with
        ``AUTO_CREATE_WORKSPACES=true``, as stock Yjs servers do; a user opening an open
        workspace becomes an editor member. Raises ``UnknownWorkspace`` or ``Forbidden``."""
        try:
            access = await resolve_access(self.store, principal, workspace_id)
        except UnknownWorkspace:
            if not self.may_create:
                raise
            try:
                workspace = await self.create(principal, workspace_id=workspace_id, name=workspace_id)
                return Access(workspace, Role.OWNER, True)
            except ConflictError:  # created by someone else meanwhile
                access = await resolve_access(self.store, principal, workspace_id)
        if access.member or principal.guest or principal.role is not GlobalRole.USER:
            return access
        member = await self.join(principal, workspace_id)
        return Access(access.workspace, Role(member.role), True)
