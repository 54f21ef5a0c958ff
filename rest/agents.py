"""``/agents``: execution state, reporting over REST, and per-user subscriptions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.agents import agent_public, event_json
from server.errors import BadRequest, ValidationFailed
from server.events.models import AGENT_EVENT_TYPES, CLIENT_MESSAGE, AgentEvent
from server.vocabulary import ID_PATTERN, MAX_ID_LENGTH, WORKSPACE_ID_PATTERN, AgentStatus

from .deps import CurrentUser, ServicesDep
from .schemas import (
    AgentDetail,
    AgentEventAccepted,
    AgentEventPublic,
    AgentPublic,
    AgentsPublic,
    Subscription,
)

router = APIRouter(prefix="/agents", tags=["agents"])

AgentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


class AgentEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="agent_execution_start | agent_execution_update | agent_execution_complete")
    data: dict[str, Any] = Field(
        default_factory=dict, description="the event's data; agent_id defaults to the path"
    )


@router.get(
    "/status", response_model=AgentsPublic, summary="Agents you may see, filterable by workspace and status"
)
async def agents_status(
    services: ServicesDep,
    user: CurrentUser,
    workspace_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, pattern=WORKSPACE_ID_PATTERN)] = None,
    status_: Annotated[AgentStatus | None, Query(alias="status")] = None,
) -> AgentsPublic:
    found = await services.agents.visible(user, workspace_id=workspace_id, status=status_)
    return AgentsPublic(data=[AgentPublic(**agent_public(a)) for a in found], count=len(found))


@router.get("/{agent_id}", response_model=AgentDetail, summary="An agent's latest state and recent events")
async def agent_detail(
    agent_id: AgentId,
    services: ServicesDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AgentDetail:
    state, recent = await services.agents.detail(user, agent_id, limit=limit)
    return AgentDetail(
        agent=AgentPublic(**agent_public(state)), events=[AgentEventPublic(**event_json(e)) for e in recent]
    )


@router.post(
    "/{agent_id}/events",
    response_model=AgentEventAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Report an execution event",
)
async def report_event(
    agent_id: AgentId, body: AgentEventIn, services: ServicesDep, user: CurrentUser
) -> AgentEventAccepted:
    if body.type not in AGENT_EVENT_TYPES:
        raise BadRequest(f"type must be one of {', '.join(AGENT_EVENT_TYPES)}")
    data = {**body.data, "agent_id": body.data.get("agent_id", agent_id)}
    if data["agent_id"] != agent_id:
        raise BadRequest("data.agent_id differs from the agent in the path")
    try:
        message: AgentEvent = CLIENT_MESSAGE.validate_python({"type": body.type, "data": data})  # type: ignore[assignment]
    except ValidationError as exc:
        details = [{"loc": list(e["loc"][1:]), "msg": e["msg"]} for e in exc.errors(include_url=False)]
        summary = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        raise ValidationFailed(f"invalid {body.type}: {summary}", details=details) from None
    event_id = await services.agents.report(user, message)
    return AgentEventAccepted(id=event_id, agent_id=agent_id, type=body.type)


@router.post(
    "/{agent_id}/subscribe",
    response_model=Subscription,
    summary="Subscribe to an agent (stored; applies to all your connections)",
)
async def subscribe(agent_id: AgentId, services: ServicesDep, user: CurrentUser) -> Subscription:
    await services.agents.subscribe(user, agent_id)
    return Subscription(agent_id=agent_id, subscribed=True)


@router.post("/{agent_id}/unsubscribe", response_model=Subscription, summary="Unsubscribe from an agent")
async def unsubscribe(agent_id: AgentId, services: ServicesDep, user: CurrentUser) -> Subscription:
    await services.agents.unsubscribe(user, agent_id)
    return Subscription(agent_id=agent_id, subscribed=False)
