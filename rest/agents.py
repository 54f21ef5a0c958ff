"""``/agents``: execution state, reporting over REST, and per-user subscriptions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crdt_store import agents as agent_store
from crdt_store import event_log
from server.access import resolve_access
from server.agents import agent_public
from server.errors import BadRequest, Forbidden, NotFoundError
from server.events.hub import agent_topic
from server.events.models import AGENT_EVENT_TYPES, CLIENT_MESSAGE, AgentStatus
from server.vocabulary import ID_PATTERN, MAX_ID_LENGTH

from .deps import CurrentUser, ServicesDep

router = APIRouter(prefix="/agents", tags=["agents"])

AgentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]


class AgentEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="agent_execution_start | agent_execution_update | agent_execution_complete")
    data: dict[str, Any] = Field(
        default_factory=dict, description="the event's data; agent_id defaults to the path"
    )


@router.get("/status", summary="Agents you may see, filterable by workspace and status")
async def agents_status(
    services: ServicesDep,
    user: CurrentUser,
    workspace_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)] = None,
    status_: Annotated[AgentStatus | None, Query(alias="status")] = None,
) -> dict[str, Any]:
    if workspace_id is not None:
        await resolve_access(services.store, user, workspace_id)  # an unknown workspace is 404
    found = await agent_store.list_agents(
        services.store.engine, workspace_id=workspace_id, status=status_.value if status_ else None
    )
    visible = [agent_public(a) for a in await services.agents.visible(user, found)]
    return {"data": visible, "count": len(visible)}


@router.get("/{agent_id}", summary="An agent's latest state and recent events")
async def agent_detail(
    agent_id: AgentId,
    services: ServicesDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    state = await agent_store.get_agent(services.store.engine, agent_id=agent_id)
    if state is None or not await services.agents.can_see(user, state):
        raise NotFoundError(f"agent {agent_id!r} has not reported (or you may not see it)")
    recent = await event_log.recent_events(services.store.engine, topic=agent_topic(agent_id), limit=limit)
    return {
        "agent": agent_public(state),
        "events": [{"id": e.id, "type": e.type, "data": json.loads(e.data)} for e in recent],
    }


@router.post("/{agent_id}/events", status_code=status.HTTP_202_ACCEPTED, summary="Report an execution event")
async def report_event(
    agent_id: AgentId, body: AgentEventIn, services: ServicesDep, user: CurrentUser
) -> dict[str, Any]:
    if body.type not in AGENT_EVENT_TYPES:
        raise BadRequest(f"type must be one of {', '.join(AGENT_EVENT_TYPES)}")
    data = {**body.data, "agent_id": body.data.get("agent_id", agent_id)}
    if data["agent_id"] != agent_id:
        raise BadRequest("data.agent_id differs from the agent in the path")
    try:
        message = CLIENT_MESSAGE.validate_python({"type": body.type, "data": data})
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise BadRequest(f"invalid {body.type}: {details}") from None
    event_id = await services.agents.report(user, message)  # type: ignore[arg-type]
    return {"id": event_id, "agent_id": agent_id, "type": body.type}


@router.post(
    "/{agent_id}/subscribe", summary="Subscribe to an agent (stored; applies to all your connections)"
)
async def subscribe(agent_id: AgentId, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    state = await agent_store.get_agent(services.store.engine, agent_id=agent_id)
    if not await services.agents.can_see(user, state):
        raise Forbidden(f"you may not watch agent {agent_id!r}")
    await agent_store.subscribe(services.store.engine, user_id=user.user_id, agent_id=agent_id)
    services.subscribe_user(user.user_id, agent_id, subscribed=True)
    return {"agent_id": agent_id, "subscribed": True}


@router.post("/{agent_id}/unsubscribe", summary="Unsubscribe from an agent")
async def unsubscribe(agent_id: AgentId, services: ServicesDep, user: CurrentUser) -> dict[str, Any]:
    await agent_store.unsubscribe(services.store.engine, user_id=user.user_id, agent_id=agent_id)
    services.subscribe_user(user.user_id, agent_id, subscribed=False)
    return {"agent_id": agent_id, "subscribed": False}
