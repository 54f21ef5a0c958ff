"""Who may do what in a workspace: a principal and a workspace id give a role, or a refusal.
Deciding never writes: joining and creating are the workspace service's acts.

Rules:
- an administrator acts as owner everywhere;
- a member has its stored role (a service made a viewer member stays a viewer there);
- a service (agent publisher) acts as editor in every workspace it is not a member of;
- anyone may work in an ``open`` workspace as an editor (opening one of its documents makes an
  authenticated user a member: ``WorkspaceService.open``);
- a ``private`` workspace admits members only;
- an unknown workspace is not found.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt_store import Store, Workspace

from .auth import GlobalRole, Principal
from .errors import Forbidden, UnknownWorkspace
from .vocabulary import Role, Visibility


@dataclass(frozen=True, slots=True)
class Access:
    workspace: Workspace
    role: Role
    member: bool = False  # the principal is a stored member (an open workspace admits others)


async def resolve_access(store: Store, principal: Principal, workspace_id: str) -> Access:
    """The caller's role in the workspace, read from the store in one query (nothing is
    written). Raises ``UnknownWorkspace`` or ``Forbidden``."""
    found = await store.workspaces.find_with_role(workspace_id=workspace_id, user_id=principal.user_id)
    if found is None:
        raise UnknownWorkspace(workspace_id)
    return decide(principal, *found)


def decide(principal: Principal, workspace: Workspace, role: str | None) -> Access:
    """The rules above, for a principal whose stored role in ``workspace`` is ``role`` (None:
    not a member). Raises ``Forbidden``."""
    if principal.role is GlobalRole.ADMIN:
        return Access(workspace, Role.OWNER, role is not None)
    if role is not None:
        return Access(workspace, Role(role), True)
    if principal.role is GlobalRole.SERVICE or workspace.visibility == Visibility.OPEN:
        return Access(workspace, Role.EDITOR)
    raise Forbidden(f"workspace {workspace.id!r} is private and you are not a member")


def require(access: Access, needed: Role) -> None:
    """Raise ``Forbidden`` unless the role is at least ``needed`` (owner > editor > viewer)."""
    if not access.role.at_least(needed):
        raise Forbidden(f"this needs the {needed.value} role; you are {access.role.value}")
