"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.vocabulary import WORKSPACE_ID_PATTERN, AgentStatus, Name, Role, UtcTime, Visibility
from server.workspaces import DocumentInfo, Member, Workspace


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        max_length=255,
        pattern=WORKSPACE_ID_PATTERN,
        description="Optional id, as Yjs apps name their rooms; generated when omitted. 409 if taken.",
    )
    name: Name
    visibility: Visibility = Visibility.OPEN


class WorkspaceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    visibility: Visibility | None = None


class WorkspacePublic(BaseModel):
    id: str
    name: str
    visibility: Visibility
    owner_id: str | None
    created_at: UtcTime
    updated_at: UtcTime
    role: Role | None = Field(description="The caller's role, if it has one")

    @classmethod
    def of(cls, workspace: Workspace, role: str | None) -> WorkspacePublic:
        return cls(
            id=workspace.id,
            name=workspace.name,
            visibility=Visibility(workspace.visibility),
            owner_id=workspace.owner_id,
            created_at=workspace.created_at,
            updated_at=workspace.updated_at,
            role=None if role is None else Role(role),
        )


class WorkspacesPublic(BaseModel):
    data: list[WorkspacePublic]
    count: int = Field(description="How many workspaces the caller can see in all")


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    display_name: Name | None = None


class MemberPublic(BaseModel):
    user_id: str
    display_name: str | None
    role: Role
    joined_at: UtcTime
    online: bool

    @classmethod
    def of(cls, member: Member, online: set[str]) -> MemberPublic:
        return cls(
            user_id=member.user_id,
            display_name=member.display_name,
            role=Role(member.role),
            joined_at=member.joined_at,
            online=member.user_id in online,
        )


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int


class DocumentPublic(BaseModel):
    path: str = Field(description='"" for the workspace\'s main document')
    created_at: UtcTime
    stored_updates: int
    snapshot_bytes: int
    loaded: bool
    connections: int

    @classmethod
    def of(cls, document: DocumentInfo, connections: int | None) -> DocumentPublic:
        """``connections``: on this instance, None when the document is not loaded here."""
        return cls(
            path=document.path,
            created_at=document.created_at,
            stored_updates=document.stored_updates,
            snapshot_bytes=document.snapshot_bytes,
            loaded=connections is not None,
            connections=connections or 0,
        )


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


class AgentPublic(BaseModel):
    agent_id: str
    workspace_id: str | None
    user_id: str | None = Field(description="The user the agent works for (user_id of its start)")
    started_by: str | None = Field(description="Who sent its agent_execution_start")
    task: str | None
    status: AgentStatus
    progress: float = Field(description="0 to 100")
    current_step: str | None
    result: str | None
    execution_time: float | None = Field(description="Seconds")
    started_at: UtcTime | None
    updated_at: UtcTime | None
    completed_at: UtcTime | None


class AgentsPublic(BaseModel):
    data: list[AgentPublic]
    count: int


class AgentEventPublic(BaseModel):
    id: int
    type: str
    data: dict[str, Any]


class AgentDetail(BaseModel):
    agent: AgentPublic
    events: list[AgentEventPublic] = Field(description="The most recent events, oldest first")


class AgentEventAccepted(BaseModel):
    id: int = Field(description="The event's id in the event log")
    agent_id: str
    type: str


class Subscription(BaseModel):
    agent_id: str
    subscribed: bool
