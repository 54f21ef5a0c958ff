"""``/ws/workspaces/{workspace_id}[/{doc_path}]``: the Yjs sync endpoint (y-websocket protocol).

Served as plain ASGI, ahead of the framework's routing: check the request, accept, and hand an
``AsgiChannel`` to the room manager.
"""

from __future__ import annotations

import json
import re
from typing import Any

from crdt_store import StoreError

from .access import resolve_access
from .auth import TokenError, authenticate
from .channel import AsgiChannel, Receive, Send
from .close_codes import (
    CLOSE_1013_SERVER_FULL,
    CLOSE_1013_STORE_UNAVAILABLE,
    CLOSE_4400_BAD_MESSAGE,
    CLOSE_4401_UNAUTHORIZED,
    CloseCode,
)
from .errors import ServiceError, error_body
from .room import RoomKey
from .services import Services

SYNC_PREFIX = "/ws/workspaces/"

# Room names are what Yjs apps choose: anything printable, but bounded and without control bytes.
_WORKSPACE_ID = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")
_DOC_PATH = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")


def is_sync_request(scope: dict[str, Any]) -> bool:
    return scope["type"] == "websocket" and len(scope["path"]) > len(SYNC_PREFIX) and scope["path"].startswith(
        SYNC_PREFIX
    )


def valid_doc_path(path: str) -> bool:
    return bool(_DOC_PATH.match(path))


def room_key(path: str) -> RoomKey | None:
    """``/ws/workspaces/ws-1/notes/a.md`` -> ``RoomKey("ws-1", "notes/a.md")``; None if invalid."""
    workspace_id, _, doc_path = path[len(SYNC_PREFIX) :].partition("/")
    doc_path = doc_path.strip("/")
    if not _WORKSPACE_ID.match(workspace_id) or (doc_path and not _DOC_PATH.match(doc_path)):
        return None
    return RoomKey(workspace_id, doc_path)


async def refuse(
    scope: dict[str, Any], send: Send, *, status: int, code: str, close: CloseCode, message: str
) -> None:
    """Refuse before the upgrade completes: an HTTP response with a JSON body where the server
    supports it, otherwise a close frame with a named code."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(code, message)).encode()
        await send({
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": close.code, "reason": message[:120]})


async def sync_endpoint(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    services: Services = scope["app"].state.services
    settings = services.settings
    if (await receive())["type"] != "websocket.connect":
        return
    key = room_key(scope["path"])
    if key is None:
        await refuse(scope, send, status=400, code="bad_request", close=CLOSE_4400_BAD_MESSAGE,
                     message="invalid workspace id or document path")
        return
    if services.connections >= settings.max_connections:
        await refuse(scope, send, status=503, code="server_full", close=CLOSE_1013_SERVER_FULL,
                     message=CLOSE_1013_SERVER_FULL.reason)
        return
    try:
        principal, subprotocol = authenticate(scope, settings)
    except TokenError as exc:
        await refuse(scope, send, status=401, code="unauthorized", close=CLOSE_4401_UNAUTHORIZED, message=str(exc))
        return
    try:
        access = await resolve_access(services.store, settings, principal, key.workspace_id)
    except ServiceError as exc:
        await refuse(scope, send, status=exc.status_code, code=exc.code,
                     close=CloseCode(4000 + exc.status_code, exc.code), message=exc.message)
        return
    except StoreError:
        await refuse(scope, send, status=503, code="unavailable", close=CLOSE_1013_STORE_UNAVAILABLE,
                     message=CLOSE_1013_STORE_UNAVAILABLE.reason)
        return
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    services.connections += 1
    try:
        channel = AsgiChannel(receive, send, path=scope["path"], max_message_size=settings.max_message_size)
        await services.rooms.serve(key, channel, user=principal, can_write=access.role.can_write)
    finally:
        services.connections -= 1
