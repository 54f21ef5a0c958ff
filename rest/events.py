"""``GET /events``: the event channel as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from server.audience import agent_topic, workspace_topic
from server.errors import BadRequest, Draining
from server.events.models import MAX_EVENT_ID, event_id_param
from server.limits import client_ip
from server.vocabulary import ID_PATTERN, MAX_ID_LENGTH, WORKSPACE_ID_PATTERN

from .deps import CurrentUser, ServicesDep
from .event_stream import EventStream, EventStreamResponse

router = APIRouter(tags=["events"])

MAX_TOPICS = 100

AgentIds = Annotated[
    list[Annotated[str, Query(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]],
    Query(alias="agent_id", max_length=MAX_TOPICS, description="agents to follow (repeatable)"),
]
WorkspaceIds = Annotated[
    list[Annotated[str, Query(max_length=MAX_ID_LENGTH, pattern=WORKSPACE_ID_PATTERN)]],
    Query(alias="workspace_id", max_length=MAX_TOPICS, description="workspaces to follow (repeatable)"),
]

STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A text/event-stream: `id:` and `data:` lines per event, the data being the "
        "JSON that /ws sends; `: ping` comments as heartbeats.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def resume_point(header: str | None, query: str | None) -> int | None:
    """The id to resume after: the ``Last-Event-ID`` header (sent by a reconnecting
    ``EventSource``) over the ``last_event_id`` parameter. Raises ``BadRequest``."""
    text = header if header is not None else query
    if text is None or text == "":
        return None
    value = event_id_param(text.strip())
    if value is None:
        raise BadRequest(f"Last-Event-ID must be an integer from 0 to {MAX_EVENT_ID}")
    return value


@router.get(
    "/events",
    summary="Follow agents and workspaces as Server-Sent Events (resumable with Last-Event-ID)",
    response_class=EventStreamResponse,
    responses=STREAM_RESPONSE,
)
async def events(
    request: Request,
    services: ServicesDep,
    user: CurrentUser,
    agent_ids: AgentIds = [],  # noqa: B006 - FastAPI copies defaults
    workspace_ids: WorkspaceIds = [],  # noqa: B006
    last_event_id: Annotated[str | None, Query(max_length=20)] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> EventStream:
    """The events `/ws` would send for `subscribe_agent` of each `agent_id`, `join_workspace`
    of each `workspace_id` (without joining it) and the caller's stored subscriptions, under the
    same visibility rule. 403/404 for a workspace the caller cannot read or an agent it may not
    watch, before the stream starts."""
    after = resume_point(last_event_id_header, last_event_id)
    if services.draining:
        raise Draining()
    # A stream is a connection like a WebSocket: it counts against MAX_CONNECTIONS and the
    # per-user and per-address caps, and a drain closes it.
    ticket = services.admission.reserve(client_ip(request.scope))
    try:
        if not user.guest:
            ticket.claim_user(user.user_id)
        topics = []
        for workspace_id in workspace_ids:
            await services.workspaces.access(user, workspace_id)
            topics.append(workspace_topic(workspace_id))
        for agent_id in agent_ids:
            await services.agents.may_watch(user, agent_id)
            topics.append(agent_topic(agent_id))
    except BaseException:
        ticket.release()
        raise
    return EventStream(services, user, topics, after, ticket)
