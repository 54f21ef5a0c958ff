"""``/workspaces``: create, list, read, change and delete workspaces; join, leave, members."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from crdt_store import workspaces as workspace_store
from crdt_store.workspaces import Member, Workspace
from server.access import Role, require
from server.errors import ConflictError, NotFoundError
from server.vocabulary import ID_PATTERN, MAX_ID_LENGTH, MAX_INT64

from .deps import CurrentUser, ServicesDep, WorkspaceAccess, WorkspaceId
from .schemas import (
    DocumentPublic,
    DocumentsPublic,
    MemberPublic,
    MemberSet,
    MembersPublic,
    WorkspaceCreate,
    WorkspacePublic,
    WorkspacesPublic,
    WorkspaceUpdate,
)

router = APIRouter(prefix="/workspaces", tags=["workspaces"])

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


def _public(workspace: Workspace, role: str | None) -> WorkspacePublic:
    return WorkspacePublic(
        id=workspace.id,
        name=workspace.name,
        visibility=workspace.visibility,  # type: ignore[arg-type]
        owner_id=workspace.owner_id,
        created_at=workspace.created_at,
        updated_at=workspace.updated_at,
        role=role,  # type: ignore[arg-type]
    )


def _member(member: Member, online: set[str]) -> MemberPublic:
    return MemberPublic(
        user_id=member.user_id,
        display_name=member.display_name,
        role=member.role,  # type: ignore[arg-type]
        joined_at=member.joined_at,
        online=member.user_id in online,
    )


async def _ensure_an_owner_remains(services: ServicesDep, workspace_id: str, user_id: str) -> None:
    members = await workspace_store.list_members(services.store.engine, workspace_id=workspace_id)
    owners = [m.user_id for m in members if m.role == Role.OWNER]
    if owners == [user_id]:
        raise ConflictError("a workspace needs an owner: make someone else owner first, or delete it")


@router.get("", response_model=WorkspacesPublic, summary="List the workspaces you can see")
async def list_workspaces(
    services: ServicesDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> WorkspacesPublic:
    engine = services.store.engine
    found, total = await workspace_store.list_workspaces(
        engine, user_id=None if user.is_admin else user.user_id, limit=limit, offset=offset
    )
    roles = await workspace_store.roles_of(engine, user_id=user.user_id, workspace_ids=[w.id for w in found])
    return WorkspacesPublic(data=[_public(w, roles.get(w.id)) for w in found], count=total)


@router.post(
    "", response_model=WorkspacePublic, status_code=status.HTTP_201_CREATED, summary="Create a workspace"
)
async def create_workspace(
    body: WorkspaceCreate, services: ServicesDep, user: CurrentUser
) -> WorkspacePublic:
    workspace = await services.workspaces.create(
        user,
        workspace_id=body.id or f"ws-{secrets.token_hex(6)}",
        name=body.name,
        visibility=body.visibility,
    )
    return _public(workspace, Role.OWNER.value)


@router.get("/{workspace_id}", response_model=WorkspacePublic, summary="Get a workspace")
async def get_workspace(access: WorkspaceAccess) -> WorkspacePublic:
    return _public(access.workspace, access.role.value)


@router.patch(
    "/{workspace_id}", response_model=WorkspacePublic, summary="Rename or change visibility (owner)"
)
async def update_workspace(
    body: WorkspaceUpdate, access: WorkspaceAccess, services: ServicesDep
) -> WorkspacePublic:
    require(access, Role.OWNER)
    workspace = await workspace_store.update_workspace(
        services.store.engine, workspace_id=access.workspace.id, name=body.name, visibility=body.visibility
    )
    if body.name is not None and body.name != access.workspace.name:
        services.workspace_update(workspace.id, "workspace_renamed", name=workspace.name)
    if body.visibility is not None and body.visibility != access.workspace.visibility:
        services.workspace_update(
            workspace.id, "workspace_visibility_changed", visibility=workspace.visibility
        )
    return _public(workspace, access.role.value)


@router.delete(
    "/{workspace_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a workspace (owner)"
)
async def delete_workspace(access: WorkspaceAccess, services: ServicesDep) -> Response:
    require(access, Role.OWNER)
    document_ids = await workspace_store.delete_workspace(
        services.store.engine, workspace_id=access.workspace.id
    )
    services.close_workspace(access.workspace.id, document_ids)
    services.workspace_update(access.workspace.id, "workspace_deleted")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{workspace_id}/join", response_model=MemberPublic, summary="Join an open workspace (as editor)"
)
async def join_workspace(workspace_id: WorkspaceId, services: ServicesDep, user: CurrentUser) -> MemberPublic:
    member = await services.workspaces.join(user, workspace_id)
    return _member(member, await services.presence.online(workspace_id))


@router.post("/{workspace_id}/leave", status_code=status.HTTP_204_NO_CONTENT, summary="Leave a workspace")
async def leave_workspace(workspace_id: WorkspaceId, services: ServicesDep, user: CurrentUser) -> Response:
    engine = services.store.engine
    await workspace_store.get_workspace(engine, workspace_id=workspace_id)
    member = await workspace_store.get_member(engine, workspace_id=workspace_id, user_id=user.user_id)
    if member is None:
        raise NotFoundError("you are not a member of this workspace")
    if member.role == Role.OWNER:
        await _ensure_an_owner_remains(services, workspace_id, user.user_id)
    await workspace_store.remove_member(engine, workspace_id=workspace_id, user_id=user.user_id)
    services.update_access(workspace_id, user.user_id, None)
    services.workspace_update(workspace_id, "member_removed", user_id=user.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{workspace_id}/users", response_model=MembersPublic, summary="Members, their roles, who is online"
)
async def workspace_users(access: WorkspaceAccess, services: ServicesDep) -> MembersPublic:
    members = await workspace_store.list_members(services.store.engine, workspace_id=access.workspace.id)
    online = await services.presence.online(access.workspace.id)
    return MembersPublic(data=[_member(m, online) for m in members], count=len(members))


@router.put(
    "/{workspace_id}/members/{user_id}",
    response_model=MemberPublic,
    summary="Add a member or set its role (owner)",
)
async def set_member(
    user_id: UserId, body: MemberSet, access: WorkspaceAccess, services: ServicesDep
) -> MemberPublic:
    require(access, Role.OWNER)
    engine = services.store.engine
    current = await workspace_store.get_member(engine, workspace_id=access.workspace.id, user_id=user_id)
    if current is not None and current.role == Role.OWNER and body.role != Role.OWNER:
        await _ensure_an_owner_remains(services, access.workspace.id, user_id)
    member = await workspace_store.set_member(
        engine,
        workspace_id=access.workspace.id,
        user_id=user_id,
        role=body.role,
        display_name=body.display_name,
    )
    services.update_access(access.workspace.id, user_id, Role(body.role).can_write)
    change = "member_added" if current is None else "member_role_changed"
    if current is None or current.role != member.role:
        services.workspace_update(access.workspace.id, change, user_id=user_id, role=member.role)
    return _member(member, await services.presence.online(access.workspace.id))


@router.delete(
    "/{workspace_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owner)",
)
async def remove_member(user_id: UserId, access: WorkspaceAccess, services: ServicesDep) -> Response:
    require(access, Role.OWNER)
    engine = services.store.engine
    current = await workspace_store.get_member(engine, workspace_id=access.workspace.id, user_id=user_id)
    if current is None:
        raise NotFoundError(f"{user_id!r} is not a member of this workspace")
    if current.role == Role.OWNER:
        await _ensure_an_owner_remains(services, access.workspace.id, user_id)
    await workspace_store.remove_member(engine, workspace_id=access.workspace.id, user_id=user_id)
    services.update_access(access.workspace.id, user_id, None)
    services.workspace_update(access.workspace.id, "member_removed", user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{workspace_id}/documents", response_model=DocumentsPublic, summary="The workspace's documents")
async def list_documents(access: WorkspaceAccess, services: ServicesDep) -> DocumentsPublic:
    documents = await workspace_store.list_documents(services.store.engine, workspace_id=access.workspace.id)
    loaded = {
        room.key.path: room
        for room in services.rooms.rooms.values()
        if room.key.workspace_id == access.workspace.id
    }
    data = [
        DocumentPublic(
            path=d.path,
            created_at=d.created_at,
            stored_updates=d.stored_updates,
            snapshot_bytes=d.snapshot_bytes,
            loaded=d.path in loaded,
            connections=len(loaded[d.path].connections) if d.path in loaded else 0,
        )
        for d in documents
    ]
    return DocumentsPublic(data=data, count=len(data))
