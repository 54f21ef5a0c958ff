"""The workspace service: the one writer of workspaces, membership and documents' existence.

Every operation is: a store write, then the cluster command that applies it to live connections
on every instance, then its ``workspace_update`` event. Deciding who may do what
(``access.resolve_access``) never writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Hashable
from typing import Any, TypeVar

from crdt_store import Conflict, DocumentInfo, Member, Store, Workspace

from .access import Access, require, resolve_access
from .auth import GlobalRole, Principal
from .cluster import CloseDocument, CloseWorkspace, Cluster, RevokeAccess, SetWriteAccess, VisibilityChanged
from .config import Settings
from .errors import BadRequest, ConflictError, Forbidden, NotFoundError, UnknownWorkspace
from .events.hub import EventHub, workspace_topic
from .events.models import WorkspaceUpdateData
from .room import RoomKey
from .vocabulary import Role, Visibility

__all__ = ["DocumentInfo", "Member", "Workspace", "WorkspaceEvents", "WorkspaceService"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class WorkspaceEvents:
    """Announces changes of a workspace to its event subscribers (``workspace_update``)."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    def announce(self, workspace_id: str, update_type: str, **details: Any) -> None:
        data = WorkspaceUpdateData(workspace_id=workspace_id, update_type=update_type, **details)  # type: ignore[arg-type]
        self.hub.publish_soon(workspace_topic(workspace_id), "workspace_update", data.model_dump(mode="json"))

    def document_created(self, key: RoomKey) -> None:
        self.announce(key.workspace_id, "document_created", path=key.path)


class MemberAccess:
    """Members' access as ``WorkspaceService.open`` found it, so that a member's next connection
    (reconnects, more documents, other tabs) reads nothing. The first member to connect to a
    workspace reads every member's role with it (``store.workspaces.roster``, up to
    ``ROSTER_LIMIT`` members), so that the others, connecting after a deploy or a network
    outage, read nothing either; a workspace's roster is read at most once every ``SECONDS``.
    Forgotten when the member's access changes or the workspace is deleted (cluster commands,
    applied on every instance: the ``Cluster`` is given this cache), entirely after a Redis outage
    (commands may have been missed), and after ``SECONDS`` in any case."""

    SECONDS = 60.0
    SIZE = 100_000
    ROSTER_LIMIT = 1_000

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[float, Access]] = {}  # (workspace, user) -> (until, access)
        self.rosters: dict[str, float] = {}  # workspace -> when its roster was last read (monotonic)
        self.version = 0  # counts changes: a read that overlapped one is not kept

    def get(self, workspace_id: str, user_id: str) -> Access | None:
        cached = self.entries.get((workspace_id, user_id))
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def keep(self, workspace_id: str, user_id: str, access: Access, version: int) -> None:
        """Keep ``access``, read when the cache was at ``version``, unless it changed since."""
        if version != self.version:
            return
        if len(self.entries) >= self.SIZE:
            self.entries.clear()
            self.rosters.clear()
        self.entries[(workspace_id, user_id)] = (time.monotonic() + self.SECONDS, access)

    def roster_due(self, workspace_id: str) -> bool:
        """Whether the workspace's roster should be read: not read within ``SECONDS``. Answering
        True counts as reading it now."""
        now = time.monotonic()
        if now - self.rosters.get(workspace_id, -math.inf) < self.SECONDS:
            return False
        if len(self.rosters) >= self.SIZE:
            self.rosters.clear()
        self.rosters[workspace_id] = now
        return True

    def keep_roster(self, workspace: Workspace, roles: dict[str, str], version: int) -> None:
        """Keep every member's access from a roster (user id -> role) read at ``version``."""
        if version != self.version:
            return
        if len(self.entries) + len(roles) > self.SIZE:
            self.entries.clear()
            self.rosters.clear()
        until = time.monotonic() + self.SECONDS
        for user_id, role in roles.items():
            self.entries[(workspace.id, user_id)] = (until, Access(workspace, Role(role), True))

    def forget(self, workspace_id: str, user_id: str | None) -> None:
        """A member's access changed (``user_id``), or the workspace was deleted (None)."""
        self.version += 1
        if user_id is not None:
            self.entries.pop((workspace_id, user_id), None)
        else:
            self.rosters.pop(workspace_id, None)
            for key in [key for key in self.entries if key[0] == workspace_id]:
                del self.entries[key]

    def forget_all(self) -> None:
        self.version += 1
        self.entries.clear()
        self.rosters.clear()


class SharedReads:
    """Reads of access under way, shared by the connections that need the same one at once, but
    only while no access changed since the read began (``MemberAccess.version``): a connection
    opened after a change of access returned is never answered by a read from before it."""

    def __init__(self, member_access: MemberAccess) -> None:
        self.member_access = member_access
        self._reads: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}

    def current(self, key: Hashable) -> asyncio.Future[Any] | None:
        """The read of ``key`` under way, if it began after the last change of access."""
        entry = self._reads.get(key)
        return entry[1] if entry is not None and entry[0] == self.member_access.version else None

    def start(self, key: Hashable, read: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        future = asyncio.ensure_future(read)
        self._reads[key] = (self.member_access.version, future)

        def done(_: object) -> None:
            entry = self._reads.get(key)
            if entry is not None and entry[1] is future:
                del self._reads[key]

        future.add_done_callback(done)
        return future


class WorkspaceService:
    """Creates, joins, changes and deletes workspaces, their members and documents.

    Arguments:
        store: where workspaces and members live.
        settings: ``AUTO_CREATE_WORKSPACES``, and whether tokens are required.
        events: announces each change.
        cluster: applies access changes to live connections on every instance.
        member_access: members' access found by ``open``, kept for their next connections.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        events: WorkspaceEvents,
        cluster: Cluster,
        member_access: MemberAccess,
    ) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self.cluster = cluster
        self.member_access = member_access
        self._reads = SharedReads(member_access)  # per member (workspace, user), per roster (workspace)

    @property
    def may_create(self) -> bool:
        """Whether opening an unknown workspace creates it: without tokens (development), or
        with ``AUTO_CREATE_WORKSPACES=true``."""
        return not self.settings.auth_enabled or self.settings.auto_create_workspaces

    # -- reading ----------------------------------------------------------------------------------

    async def access(self, principal: Principal, workspace_id: str) -> Access:
        """The caller's role in the workspace. Raises ``UnknownWorkspace`` or ``Forbidden``."""
        return await resolve_access(self.store, principal, workspace_id)

    async def visible(
        self, principal: Principal, *, limit: int, offset: int
    ) -> tuple[list[tuple[Workspace, str | None]], int]:
        """The workspaces ``principal`` can see (open ones and theirs; all for administrators),
        newest first, each with the caller's role; and how many there are in all."""
        found, total = await self.store.workspaces.visible_to(
            user_id=None if principal.is_admin else principal.user_id, limit=limit, offset=offset
        )
        roles = await self.store.workspaces.roles_of(
            user_id=principal.user_id, workspace_ids=[w.id for w in found]
        )
        return [(workspace, roles.get(workspace.id)) for workspace in found], total

    async def members(self, access: Access) -> list[Member]:
        return await self.store.workspaces.members(workspace_id=access.workspace.id)

    async def documents(self, access: Access) -> list[DocumentInfo]:
        return await self.store.workspaces.documents(workspace_id=access.workspace.id)

    # -- workspaces -------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, *, workspace_id: str, name: str, visibility: Visibility = Visibility.OPEN
    ) -> Workspace:
        """Create a workspace with ``principal`` as its owner. Raises ``ConflictError`` if the id
        is taken, ``BadRequest`` for a private workspace asked for by a guest (a caller without a
        token, in open mode: the next request is another guest, whom it would refuse)."""
        if principal.guest and visibility is not Visibility.OPEN:
            raise BadRequest(
                "without a token every request is a new guest, so a private workspace created now "
                "would refuse your next request; send a token (with no JWT_SECRET set, any token "
                "names you: python -m server token --user NAME)"
            )
        try:
            workspace = await self.store.workspaces.create(
                workspace_id=workspace_id,
                name=name,
                visibility=visibility,
                owner_id=principal.user_id,
                owner_name=principal.name,
            )
        except Conflict as exc:
            raise ConflictError(str(exc)) from None
        self.events.announce(
            workspace_id, "workspace_created", owner_id=principal.user_id, visibility=visibility
        )
        return workspace

    async def update(self, access: Access, *, name: str | None, visibility: Visibility | None) -> Workspace:
        """Rename or change the visibility (owner)."""
        require(access, Role.OWNER)
        before = access.workspace
        workspace = await self.store.workspaces.update(
            workspace_id=before.id, name=name, visibility=visibility
        )
        if name is not None and name != before.name:
            self.events.announce(workspace.id, "workspace_renamed", name=workspace.name)
        if visibility is not None and visibility != before.visibility:
            self.cluster.run(VisibilityChanged(workspace.id, workspace.visibility == Visibility.PRIVATE))
            self.events.announce(
                workspace.id, "workspace_visibility_changed", visibility=workspace.visibility
            )
        return workspace

    async def delete(self, access: Access) -> None:
        """Delete the workspace with its documents (owner); its connections close (4404)."""
        require(access, Role.OWNER)
        workspace_id = access.workspace.id
        document_ids = await self.store.workspaces.delete(workspace_id=workspace_id)
        self.cluster.run(CloseWorkspace(workspace_id, tuple(document_ids)))
        self.events.announce(workspace_id, "workspace_deleted")

    # -- membership -------------------------------------------------------------------------------

    async def join(self, principal: Principal, workspace_id: str) -> Member:
        """Become an editor of an open workspace (an administrator may join any). A member keeps
        its role. Raises ``UnknownWorkspace`` or ``Forbidden``."""
        workspace = await self.store.workspaces.find(workspace_id=workspace_id)
        if workspace is None:
            raise UnknownWorkspace(workspace_id)
        member = await self.store.workspaces.member(workspace_id=workspace_id, user_id=principal.user_id)
        if member is not None:
            return member
        if workspace.visibility != Visibility.OPEN and not principal.is_admin:
            raise Forbidden(f"workspace {workspace_id!r} is private: an owner must add you")
        member = await self.store.workspaces.set_member(
            workspace_id=workspace_id,
            user_id=principal.user_id,
            role=Role.EDITOR.value,
            display_name=principal.name,
            only_if_absent=True,
        )
        self.events.announce(workspace_id, "member_added", user_id=principal.user_id, role=member.role)
        return member

    async def leave(self, principal: Principal, workspace_id: str) -> None:
        """Stop being a member (the last owner cannot: ``ConflictError``). Raises
        ``UnknownWorkspace``, or ``NotFoundError`` for a caller that is not a member."""
        if await self.store.workspaces.find(workspace_id=workspace_id) is None:
            raise UnknownWorkspace(workspace_id)
        member = await self.store.workspaces.member(workspace_id=workspace_id, user_id=principal.user_id)
        if member is None:
            raise NotFoundError("you are not a member of this workspace")
        await self._remove(workspace_id, member)

    async def set_member(
        self, access: Access, user_id: str, *, role: str, display_name: str | None
    ) -> Member:
        """Add a member or change its role (owner). Their open connections follow at once."""
        require(access, Role.OWNER)
        workspace_id = access.workspace.id
        current = await self.store.workspaces.member(workspace_id=workspace_id, user_id=user_id)
        if current is not None and current.role == Role.OWNER and role != Role.OWNER:
            await self._ensure_an_owner_remains(workspace_id, user_id)
        member = await self.store.workspaces.set_member(
            workspace_id=workspace_id, user_id=user_id, role=role, display_name=display_name
        )
        self.cluster.run(SetWriteAccess(workspace_id, user_id, Role(role).can_write))
        if current is None:
            self.events.announce(workspace_id, "member_added", user_id=user_id, role=member.role)
        elif current.role != member.role:
            self.events.announce(workspace_id, "member_role_changed", user_id=user_id, role=member.role)
        return member

    async def remove_member(self, access: Access, user_id: str) -> None:
        """Remove a member (owner); their connections close at once (4403)."""
        require(access, Role.OWNER)
        member = await self.store.workspaces.member(workspace_id=access.workspace.id, user_id=user_id)
        if member is None:
            raise NotFoundError(f"{user_id!r} is not a member of this workspace")
        await self._remove(access.workspace.id, member)

    async def _remove(self, workspace_id: str, member: Member) -> None:
        if member.role == Role.OWNER:
            await self._ensure_an_owner_remains(workspace_id, member.user_id)
        await self.store.workspaces.remove_member(workspace_id=workspace_id, user_id=member.user_id)
        self.cluster.run(RevokeAccess(workspace_id, member.user_id))
        self.events.announce(workspace_id, "member_removed", user_id=member.user_id)

    async def _ensure_an_owner_remains(self, workspace_id: str, user_id: str) -> None:
        members = await self.store.workspaces.members(workspace_id=workspace_id)
        owners = [m.user_id for m in members if m.role == Role.OWNER]
        if owners == [user_id]:
            raise ConflictError("a workspace needs an owner: make someone else owner first, or delete it")

    # -- documents --------------------------------------------------------------------------------

    async def open(self, principal: Principal, workspace_id: str) -> Access:
        """Access for a client opening one of the workspace's documents. Opening an unknown
        workspace creates it (the caller its owner) on a server without tokens or with
        ``AUTO_CREATE_WORKSPACES=true``, as stock Yjs servers do; a user opening an open
        workspace becomes an editor member. Raises ``UnknownWorkspace`` or ``Forbidden``.
        A member's access is kept (``MemberAccess``): only its role is current, the workspace's
        name and visibility are as they were when it was read."""
        key = (workspace_id, principal.user_id)
        if principal.role is not GlobalRole.USER:
            return await self._open(principal, workspace_id)
        cached = self.member_access.get(workspace_id, principal.user_id)
        if cached is not None:
            return cached
        # One read per member at once: a user whose tabs all reconnect together waits for one.
        opening = self._reads.current(key) or self._reads.start(
            key, self._read_access(principal, workspace_id)
        )
        # shield: one waiter leaving (its client went away) must not cancel the others' read.
        return await asyncio.shield(opening)

    async def _read_access(self, principal: Principal, workspace_id: str) -> Access:
        cache = self.member_access
        roster = self._reads.current(workspace_id)
        if roster is None and cache.roster_due(workspace_id):
            roster = self._reads.start(workspace_id, self._read_roster(workspace_id))
        if roster is not None:  # read by the first member to connect, for every member
            await asyncio.shield(roster)
            cached = cache.get(workspace_id, principal.user_id)
            if cached is not None:
                return cached
        version = cache.version
        access = await self._open(principal, workspace_id)
        if access.member:
            cache.keep(workspace_id, principal.user_id, access, version)
        return access

    async def _read_roster(self, workspace_id: str) -> None:
        version = self.member_access.version
        found = await self.store.workspaces.roster(workspace_id=workspace_id, limit=MemberAccess.ROSTER_LIMIT)
        if found is None:  # unknown: the next connection, once it exists, reads it again
            self.member_access.rosters.pop(workspace_id, None)
            return
        workspace, roles = found
        if roles is not None:
            self.member_access.keep_roster(workspace, roles, version)

    async def _open(self, principal: Principal, workspace_id: str) -> Access:
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

    async def delete_document(self, access: Access, path: str) -> None:
        """Delete a document with its history (editor); its connections close (4404)."""
        require(access, Role.EDITOR)
        if not path:
            raise BadRequest("the main document cannot be deleted; delete the workspace instead")
        workspace_id = access.workspace.id
        document_id = await self.store.workspaces.delete_document(workspace_id=workspace_id, path=path)
        self.cluster.run(CloseDocument(workspace_id, path, document_id))
        self.events.announce(workspace_id, "document_deleted", path=path)
