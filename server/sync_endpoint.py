"""``/ws/workspaces/{workspace_id}[/{doc_path}]``: the Yjs sync endpoint (y-websocket protocol).

Served as plain ASGI, ahead of the framework's routing: check the request, accept, and hand an
``AsgiChannel`` to the room manager.
"""

from __future__ import annotations

import re
from typing import Any

from crdt_store import StoreError

from .channel import AsgiChannel, Receive, Send
from .close_codes import (
    CLOSE_1013_STORE_UNAVAILABLE,
    CLOSE_4400_BAD_MESSAGE,
    CLOSE_4401_UNAUTHORIZED,
    CLOSE_4403_FORBIDDEN,
    CLOSE_4404_NOT_FOUND,
    CloseCode,
)
from .errors import DATABASE_UNAVAILABLE_CODE, NotFoundError, ServiceError
from .handshake import admit, refuse
from .room import RoomKey
from .services import Services

SYNC_PREFIX = "/ws/workspaces/"

# Close codes for refusals, for clients that only see a close frame.
REFUSALS: dict[int, CloseCode] = {
    401: CLOSE_4401_UNAUTHORIZED,
    403: CLOSE_4403_FORBIDDEN,
    404: CLOSE_4404_NOT_FOUND,
}

# Room names are what Yjs apps choose: anything printable, but bounded and without control bytes.
# A path is bounded in UTF-8 bytes too: with its workspace id it is one database index entry.
_WORKSPACE_ID = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")
_DOC_PATH = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")
MAX_PATH_BYTES = 1024


def is_sync_request(scope: dict[str, Any]) -> bool:
    return (
        scope["type"] == "websocket"
        and len(scope["path"]) > len(SYNC_PREFIX)
        and scope["path"].startswith(SYNC_PREFIX)
    )


def valid_doc_path(path: str) -> bool:
    return bool(_DOC_PATH.match(path)) and len(path.encode("utf-8", "surrogatepass")) <= MAX_PATH_BYTES


def room_key(path: str) -> RoomKey | None:
    """``/ws/workspaces/ws-1/notes/a.md`` -> ``RoomKey("ws-1", "notes/a.md")``; None if invalid."""
    workspace_id, _, doc_path = path[len(SYNC_PREFIX) :].partition("/")
    doc_path = doc_path.strip("/")
    if not _WORKSPACE_ID.match(workspace_id) or (doc_path and not valid_doc_path(doc_path)):
        return None
    return RoomKey(workspace_id, doc_path)


async def sync_endpoint(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    services: Services = scope["app"].state.services
    settings = services.settings
    admitted = await admit(scope, receive, send, services)
    if admitted is None:
        return
    principal, subprotocol = admitted
    key = room_key(scope["path"])
    if key is None:
        await refuse(
            scope,
            send,
            status=400,
            code="bad_request",
            close=CLOSE_4400_BAD_MESSAGE,
            message="invalid workspace id or document path",
        )
        return
    try:
        access = await services.workspaces.open(principal, key.workspace_id)
        if not access.role.can_write and not await services.rooms.exists(key):
            # Opening a document creates it: a viewer's read-only connection may not.
            raise NotFoundError(f"document {key.path or '(main)'!r} does not exist; viewers cannot create it")
    except ServiceError as exc:
        await refuse(
            scope,
            send,
            status=exc.status_code,
            code=exc.code,
            close=CloseCode(4000 + exc.status_code, exc.code),
            message=exc.message,
        )
        return
    except StoreError:
        await refuse(
            scope,
            send,
            status=503,
            code=DATABASE_UNAVAILABLE_CODE,
            close=CLOSE_1013_STORE_UNAVAILABLE,
            message=CLOSE_1013_STORE_UNAVAILABLE.reason,
        )
        return
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    services.connections += 1
    try:
        channel = AsgiChannel(receive, send, path=scope["path"], max_message_size=settings.max_message_size)
        await services.rooms.serve(key, channel, user=principal, can_write=access.role.can_write)
    finally:
        services.connections -= 1
