"""Admitting a WebSocket: capacity and token checks before the upgrade, and refusals with a JSON
body (or a named close code for servers without denial responses)."""

from __future__ import annotations

import json
import logging
from typing import Any

from .auth import Principal, TokenError, authenticate
from .channel import Receive, Send
from .close_codes import (
    CLOSE_1013_SERVER_FULL,
    CLOSE_4401_UNAUTHORIZED,
    CLOSE_4404_NOT_FOUND,
    CloseCode,
    reason_of,
)
from .errors import error_body
from .services import Services

log = logging.getLogger(__name__)


async def refuse(
    scope: dict[str, Any], send: Send, *, status: int, code: str, close: CloseCode, message: str
) -> None:
    """Refuse before the upgrade completes: an HTTP response with a JSON body where the server
    supports it, otherwise a close frame with a named code. Logged once, with the reason."""
    client = scope.get("client") or ("?", 0)
    log.info("refused WebSocket %s from %s:%s: %d %s: %s", scope["path"], *client, status, code, message)
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": close.code, "reason": reason_of(message)})


async def refuse_unknown_endpoint(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """A WebSocket upgrade to a path that serves none: 404 with the JSON body, logged once."""
    if (await receive())["type"] == "websocket.connect":
        await refuse(
            scope,
            send,
            status=404,
            code="not_found",
            close=CLOSE_4404_NOT_FOUND,
            message="no WebSocket endpoint here: documents are at /ws/workspaces/{workspace_id}[/{path}], "
            "events at /ws, /ws/agents and /ws/workspaces",
        )


async def admit(
    scope: dict[str, Any], receive: Receive, send: Send, services: Services
) -> tuple[Principal, str | None] | None:
    """Wait for the client's connect, check capacity and its token. Returns the principal and the
    subprotocol to accept, or None once the request has been refused."""
    if (await receive())["type"] != "websocket.connect":
        return None
    if services.connections >= services.settings.max_connections:
        await refuse(
            scope,
            send,
            status=503,
            code="server_full",
            close=CLOSE_1013_SERVER_FULL,
            message=CLOSE_1013_SERVER_FULL.reason,
        )
        return None
    try:
        return authenticate(scope, services.settings)
    except TokenError as exc:
        await refuse(
            scope, send, status=401, code="unauthorized", close=CLOSE_4401_UNAUTHORIZED, message=str(exc)
        )
        return None
