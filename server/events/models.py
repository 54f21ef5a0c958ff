"""Every message of the event channel as a validated model.

Client -> server: the commands ``subscribe_agent``, ``unsubscribe_agent``, ``join_workspace``,
``leave_workspace``, ``resume``, ``ping``, and (publishers) the three agent execution events.
Server -> client: ``welcome``, ``ack``, ``error``, ``pong``, ``resync_required``, and events
``{"id", "type", "data"}`` of the spec's six types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
)

from ..vocabulary import (
    MAX_INT64,
    AgentStatus,
    Id,
    ShortText,
    Text,
    Timestamp,
    WorkspaceId,
    utcnow,
)

RequestId = Annotated[str, Field(max_length=100)]
MAX_EVENT_ID = MAX_INT64  # event ids are 64-bit database keys


def event_id_param(text: str) -> int | None:
    """An event id given as text (a query parameter), or None unless it is ``0`` to
    ``MAX_EVENT_ID`` in ASCII digits."""
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_EVENT_ID else None


class Payload(BaseModel):
    # Numbers must be finite: JSON has no Infinity or NaN, and every event is sent on as JSON.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Timestamped(Payload):
    timestamp: Timestamp = Field(default_factory=utcnow, description="ISO 8601; the server's time if omitted")


# -- agent execution events (published by agents, delivered to subscribers) ----------------------


class AgentExecutionStartData(Timestamped):
    agent_id: Id
    task: Text = Field(default="", description="at most AGENT_TASK_MAX_LENGTH characters")
    user_id: Id | None = None
    workspace_id: WorkspaceId | None = Field(default=None, description="attaches the agent to this workspace")
    status: Literal[AgentStatus.QUEUED, AgentStatus.RUNNING] = AgentStatus.RUNNING


class AgentExecutionUpdateData(Timestamped):
    agent_id: Id
    status: AgentStatus = AgentStatus.RUNNING
    progress: float = Field(default=0, ge=0, le=100)
    current_step: Text = Field(default="", description="at most AGENT_STEP_MAX_LENGTH characters")


class AgentExecutionCompleteData(Timestamped):
    agent_id: Id
    status: Literal[AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED] = AgentStatus.COMPLETED
    result: Text = Field(default="", description="at most AGENT_RESULT_MAX_LENGTH characters")
    execution_time: float | None = Field(default=None, ge=0, description="seconds; computed if omitted")


# -- workspace events (produced by the server) ----------------------------------------------------


class UserPresenceData(Timestamped):
    workspace_id: WorkspaceId
    user_id: Id
    username: ShortText


class WorkspaceUpdateData(Timestamped):
    model_config = ConfigDict(extra="allow", frozen=True)

    workspace_id: WorkspaceId
    update_type: Literal[
        "workspace_created",
        "agent_added",
        "agent_removed",
        "document_created",
        "document_deleted",
        "member_added",
        "member_removed",
        "member_role_changed",
        "workspace_renamed",
        "workspace_visibility_changed",
        "workspace_deleted",
    ]


# -- client messages ------------------------------------------------------------------------------


class Message(Payload):
    request_id: RequestId | None = None


class AgentRef(Payload):
    agent_id: Id


class WorkspaceRef(Payload):
    workspace_id: WorkspaceId


class ResumeData(Payload):
    last_event_id: StrictInt = Field(ge=0, le=MAX_EVENT_ID)


class SubscribeAgent(Message):
    type: Literal["subscribe_agent"]
    data: AgentRef


class UnsubscribeAgent(Message):
    type: Literal["unsubscribe_agent"]
    data: AgentRef


class JoinWorkspace(Message):
    type: Literal["join_workspace"]
    data: WorkspaceRef


class LeaveWorkspace(Message):
    type: Literal["leave_workspace"]
    data: WorkspaceRef


class Resume(Message):
    type: Literal["resume"]
    data: ResumeData


class Ping(Message):
    type: Literal["ping"]
    data: dict[str, Any] = Field(default_factory=dict)


class AgentExecutionStart(Message):
    type: Literal["agent_execution_start"]
    data: AgentExecutionStartData


class AgentExecutionUpdate(Message):
    type: Literal["agent_execution_update"]
    data: AgentExecutionUpdateData


class AgentExecutionComplete(Message):
    type: Literal["agent_execution_complete"]
    data: AgentExecutionCompleteData


AgentEvent = AgentExecutionStart | AgentExecutionUpdate | AgentExecutionComplete
ClientCommand = (
    SubscribeAgent | UnsubscribeAgent | JoinWorkspace | LeaveWorkspace | Resume | Ping | AgentEvent
)
CLIENT_MESSAGE: TypeAdapter[ClientCommand] = TypeAdapter(
    Annotated[ClientCommand, Field(discriminator="type")]
)


def _type_names(union: Any) -> tuple[str, ...]:
    """The ``type`` literal of each message model of a union."""
    return tuple(get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(union))


CLIENT_TYPES = _type_names(ClientCommand)
AGENT_EVENT_TYPES = _type_names(AgentEvent)


# -- server messages ------------------------------------------------------------------------------


class Welcome(BaseModel):
    """The first message of every event connection."""

    connection_id: str
    user_id: str
    username: str
    endpoint: str
    heartbeat_interval: float = Field(description="seconds between the server's pings")
    server_time: str


class ErrorData(BaseModel):
    """An ``error`` reply: never closes the stream."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ResyncRequired(BaseModel):
    """Sent instead of a replay when events after ``last_event_id`` are older than retention."""

    reason: str
    last_event_id: int
    agents: list[dict[str, Any]] = Field(description="the current state of each subscribed agent")
