"""The events baseline: a bare relay of the event channel's traffic, without persistence,
validation or visibility rules: ``subscribe_agent`` adds the socket to the agent's set; an
agent event gets the next id, is acknowledged and is sent to the agent's subscribers. What any
Python server on the same ASGI server and WebSocket implementation can do at best.

Run as ``uvicorn benchmarks.event_relay:app``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

_subscribers: dict[str, set[Any]] = {}
_ids = itertools.count(1)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    mine: set[str] = set()
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            body = json.loads(message.get("text") or message.get("bytes") or b"{}")
            kind, data = body.get("type"), body.get("data", {})
            reply: dict[str, Any] = {"type": "ack", "request_id": body.get("request_id"), "data": {}}
            if kind == "subscribe_agent":
                _subscribers.setdefault(data["agent_id"], set()).add(send)
                mine.add(data["agent_id"])
            elif kind in ("agent_execution_start", "agent_execution_update", "agent_execution_complete"):
                event_id = next(_ids)
                reply["data"] = {"agent_id": data["agent_id"], "event_id": event_id}
                text = json.dumps({"id": event_id, "type": kind, "data": data}, separators=(",", ":"))
                for subscriber in list(_subscribers.get(data["agent_id"], ())):
                    await subscriber({"type": "websocket.send", "text": text})
            await send({"type": "websocket.send", "text": json.dumps(reply)})
    finally:
        for agent_id in mine:
            _subscribers.get(agent_id, set()).discard(send)
