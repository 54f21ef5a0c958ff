"""Admitting a WebSocket: capacity and token checks before the upgrade, and every refusal, made in
one place: an HTTP response with the JSON error body where the server supports it, otherwise a
close frame whose code follows the status (``close_codes.refusal``)."""

from __future__ import annotations

import json
import logging

from starlette.types import Receive, Scope, Send

from .. import metrics
from ..auth import Principal, TokenError, authenticate
from ..close_codes import reason_of, refusal
from ..errors import NotFoundError, ServerFull, ServiceError, Unauthorized, error_body
from ..services import Services

log = logging.getLogger("server.endpoints")


async def refuse(scope: Scope, send: Send, error: ServiceError) -> None:
    """Refuse before the upgrade completes. Logged once, with the reason."""
    metrics.error_sent("websocket", error.code)
    client = scope.get("client") or ("?", 0)
    log.info(
        "refused WebSocket %s from %s:%s: %d %s: %s",
        scope["path"],
        *client,
        error.status_code,
        error.code,
        error.message,
    )
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(error.code, error.message)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        close = refusal(error.status_code)
        await send({"type": "websocket.close", "code": close.code, "reason": reason_of(error.message)})


async def admit(
    scope: Scope, receive: Receive, send: Send, services: Services
) -> tuple[Principal, str | None] | None:
    """Wait for the client's connect, check capacity and its token. Returns the principal and the
    subprotocol to accept, or None once the request has been refused."""
    if (await receive())["type"] != "websocket.connect":
        return None
    if services.connections >= services.settings.max_connections:
        await refuse(scope, send, ServerFull("too many connections; try again later"))
        return None
    try:
        return authenticate(scope, services.settings)
    except TokenError as exc:
        await refuse(scope, send, Unauthorized(str(exc)))
        return None


async def refuse_unknown_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket upgrade to a path that serves none: 404 with the JSON body."""
    if (await receive())["type"] == "websocket.connect":
        await refuse(
            scope,
            send,
            NotFoundError(
                "no WebSocket endpoint here: documents are at /ws/workspaces/{workspace_id}[/{path}], "
                "events at /ws, /ws/agents and /ws/workspaces"
            ),
        )
