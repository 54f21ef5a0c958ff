"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.vocabulary import Name

Visibility = Literal["open", "private"]
RoleName = Literal["owner", "editor", "viewer"]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,254}$"


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Optional id, as Yjs apps name their rooms; generated when omitted. 409 if taken.",
    )
    name: Name
    visibility: Visibility = "open"


class WorkspaceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    visibility: Visibility | None = None


class WorkspacePublic(BaseModel):
    id: str
    name: str
    visibility: Visibility
    owner_id: str | None
    created_at: datetime
    updated_at: datetime
    role: RoleName | None = Field(description="The caller's role, if it has one")


class WorkspacesPublic(BaseModel):
    data: list[WorkspacePublic]
    count: int = Field(description="How many workspaces the caller can see in all")


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName
    display_name: Name | None = None


class MemberPublic(BaseModel):
    user_id: str
    display_name: str | None
    role: RoleName
    joined_at: datetime
    online: bool


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int


class DocumentPublic(BaseModel):
    path: str = Field(description='"" for the workspace\'s main document')
    created_at: datetime
    stored_updates: int
    snapshot_bytes: int
    loaded: bool
    connections: int


class DocumentsPublic(BaseModel):
    data: list[DocumentPublic]
    count: int


class DocumentContent(BaseModel):
    workspace_id: str
    path: str
    content: dict[str, Any] = Field(description="Each root shared type by name, as JSON")


class UpdateApplied(BaseModel):
    applied_bytes: int
    state_vector: str = Field(description="The document's state vector after the update, base64")
