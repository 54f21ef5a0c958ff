"""Dependencies of the REST routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from server.access import Access, resolve_access
from server.auth import Principal, TokenError, authenticate
from server.errors import Unauthorized
from server.services import Services
from server.vocabulary import MAX_ID_LENGTH, WORKSPACE_ID_PATTERN


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_current_user(request: Request, services: ServicesDep) -> Principal:
    try:
        principal, _ = authenticate(request.scope, services.settings)
    except TokenError as exc:
        raise Unauthorized(str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]

WorkspaceId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=WORKSPACE_ID_PATTERN)]


async def get_workspace_access(workspace_id: WorkspaceId, services: ServicesDep, user: CurrentUser) -> Access:
    """The caller's role in the workspace of the path, without joining it."""
    return await resolve_access(services.store, user, workspace_id)


WorkspaceAccess = Annotated[Access, Depends(get_workspace_access)]
