"""``/workspaces``: create, list, read, change and delete workspaces; join, leave, members."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from server.vocabulary import ID_PATTERN, MAX_ID_LENGTH, MAX_INT64, Role

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


@router.get("", response_model=WorkspacesPublic, summary="List the workspaces you can see")
async def list_workspaces(
    services: ServicesDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> WorkspacesPublic:
    found, total = await services.workspaces.visible(user, limit=limit, offset=offset)
    return WorkspacesPublic(data=[WorkspacePublic.of(w, role) for w, role in found], count=total)


@router.post(
    "", response_model=WorkspacePublic, status_code=status.HTTP_201_CREATED, summary="Create a workspace"
)
async def create_workspace(
    body: WorkspaceCreate, services: ServicesDep, user: CurrentUser
) -> WorkspacePublic:
    workspace = await services.workspaces.create(
        user, workspace_id=body.id or f"ws-{secrets.token_hex(6)}", name=body.name, visibility=body.visibility
    )
    return WorkspacePublic.of(workspace, Role.OWNER)


@router.get("/{workspace_id}", response_model=WorkspacePublic, summary="Get a workspace")
async def get_workspace(access: WorkspaceAccess) -> WorkspacePublic:
    return WorkspacePublic.of(access.workspace, access.role)


@router.patch(
    "/{workspace_id}", response_model=WorkspacePublic, summary="Rename or change visibility (owner)"
)
async def update_workspace(
    body: WorkspaceUpdate, access: WorkspaceAccess, services: ServicesDep
) -> WorkspacePublic:
    workspace = await services.workspaces.update(access, name=body.name, visibility=body.visibility)
    return WorkspacePublic.of(workspace, access.role)


@router.delete(
    "/{workspace_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a workspace (owner)"
)
async def delete_workspace(access: WorkspaceAccess, services: ServicesDep) -> Response:
    await services.workspaces.delete(access)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{workspace_id}/join", response_model=MemberPublic, summary="Join an open workspace (as editor)"
)
async def join_workspace(workspace_id: WorkspaceId, services: ServicesDep, user: CurrentUser) -> MemberPublic:
    member = await services.workspaces.join(user, workspace_id)
    return MemberPublic.of(member, await services.presence.online(workspace_id))


@router.post("/{workspace_id}/leave", status_code=status.HTTP_204_NO_CONTENT, summary="Leave a workspace")
async def leave_workspace(workspace_id: WorkspaceId, services: ServicesDep, user: CurrentUser) -> Response:
    await services.workspaces.leave(user, workspace_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{workspace_id}/users", response_model=MembersPublic, summary="Members, their roles, who is online"
)
async def workspace_users(access: WorkspaceAccess, services: ServicesDep) -> MembersPublic:
    members = await services.workspaces.members(access)
    online = await services.presence.online(access.workspace.id)
    return MembersPublic(data=[MemberPublic.of(m, online) for m in members], count=len(members))


@router.put(
    "/{workspace_id}/members/{user_id}",
    response_model=MemberPublic,
    summary="Add a member or set its role (owner)",
)
async def set_member(
    user_id: UserId, body: MemberSet, access: WorkspaceAccess, services: ServicesDep
) -> MemberPublic:
    member = await services.workspaces.set_member(
        access, user_id, role=body.role, display_name=body.display_name
    )
    return MemberPublic.of(member, await services.presence.online(access.workspace.id))


@router.delete(
    "/{workspace_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a member (owner)",
)
async def remove_member(user_id: UserId, access: WorkspaceAccess, services: ServicesDep) -> Response:
    await services.workspaces.remove_member(access, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{workspace_id}/documents", response_model=DocumentsPublic, summary="The workspace's documents")
async def list_documents(access: WorkspaceAccess, services: ServicesDep) -> DocumentsPublic:
    documents = await services.workspaces.documents(access)
    connections = services.rooms.connections_by_path(access.workspace.id)
    data = [DocumentPublic.of(d, connections.get(d.path)) for d in documents]
    return DocumentsPublic(data=data, count=len(data))
