"""Who may do what in a workspace: a principal and a workspace id give a role, or a refusal.

Rules:
- an administrator acts as owner everywhere; a service (agent publisher) as editor everywhere;
- a member has its stored role;
- anyone authenticated may open an ``open`` workspace and becomes an editor member on first use
  (guests of an open development server are editors without being stored);
- a ``private`` workspace admits members only;
- an unknown workspace is created (open, the caller its owner) on a server without tokens or with
  ``AUTO_CREATE_WORKSPACES=true``; otherwise it is not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from crdt_store import Conflict, Store
from crdt_store import workspaces as workspace_store
from crdt_store.workspaces import Member, Workspace

from .auth import GlobalRole, Principal
from .config import Settings
from .errors import Forbidden, NotFoundError


class Role(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_write(self) -> bool:
        return self is not Role.VIEWER


@dataclass(frozen=True, slots=True)
class Access:
    workspace: Workspace
    role: Role


async def resolve_access(
    store: Store, settings: Settings, principal: Principal, workspace_id: str, *, join: bool = True
) -> Access:
    """The caller's role in the workspace. ``join`` makes a first visitor of an open workspace a
    stored member. Raises ``NotFoundError`` or ``Forbidden``."""
    engine = store.engine
    workspace = await workspace_store.find_workspace(engine, workspace_id=workspace_id)
    if workspace is None:
        if settings.auth_enabled and not settings.auto_create_workspaces:
            raise NotFoundError(f"workspace {workspace_id!r} does not exist")
        try:
            workspace = await workspace_store.create_workspace(
                engine,
                workspace_id=workspace_id,
                name=workspace_id,
                visibility="open",
                owner_id=principal.user_id,
                owner_name=principal.name,
            )
            return Access(workspace, Role.OWNER)
        except Conflict:  # created by someone else meanwhile
            workspace = await workspace_store.get_workspace(engine, workspace_id=workspace_id)
    if principal.role is GlobalRole.ADMIN:
        return Access(workspace, Role.OWNER)
    member = await workspace_store.get_member(engine, workspace_id=workspace_id, user_id=principal.user_id)
    if member is not None:
        return Access(workspace, Role(member.role))
    if principal.role is GlobalRole.SERVICE:
        return Access(workspace, Role.EDITOR)
    if workspace.visibility == "open":
        if join and not principal.guest:
            member = await join_as_editor(store, workspace_id, principal)
            return Access(workspace, Role(member.role))
        return Access(workspace, Role.EDITOR)
    raise Forbidden(f"workspace {workspace_id!r} is private and you are not a member")


async def join_as_editor(store: Store, workspace_id: str, principal: Principal) -> Member:
    """Make the principal an editor member, leaving an existing member's role as it is."""
    return await workspace_store.set_member(
        store.engine,
        workspace_id=workspace_id,
        user_id=principal.user_id,
        role=Role.EDITOR.value,
        display_name=principal.name,
        only_if_absent=True,
    )


def require(access: Access, needed: Role) -> None:
    """Raise ``Forbidden`` unless the role is at least ``needed`` (owner > editor > viewer)."""
    order = [Role.VIEWER, Role.EDITOR, Role.OWNER]
    if order.index(access.role) < order.index(needed):
        raise Forbidden(f"this needs the {needed.value} role; you are {access.role.value}")
