"""``/ws/workspaces/{workspace_id}[/{doc_path}]``: the Yjs sync endpoint (y-websocket protocol).

A thin adapter: check the request, accept, and hand a ``Channel`` to the room manager.
"""

from __future__ import annotations

import re

from fastapi import WebSocket
from fastapi.responses import JSONResponse

from .channel import StarletteChannel
from .close_codes import CLOSE_1013_SERVER_FULL, CLOSE_4400_BAD_MESSAGE, CloseCode
from .errors import error_body
from .room import RoomKey
from .services import Services

# Room names are what Yjs apps choose: anything printable, but bounded and without control bytes.
_WORKSPACE_ID = re.compile(r"^[^\x00-\x1f\x7f/]{1,255}$")
_DOC_PATH = re.compile(r"^[^\x00-\x1f\x7f]{1,1024}$")


async def refuse(websocket: WebSocket, *, status: int, code: str, close: CloseCode, message: str) -> None:
    """Refuse before the upgrade completes: an HTTP response with a JSON body where the server
    supports it, otherwise a close frame with a named code."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error_body(code, message), status_code=status))
    else:
        await websocket.close(code=close.code, reason=message[:120])


def room_key(workspace_id: str, doc_path: str = "") -> RoomKey | None:
    doc_path = doc_path.strip("/")
    if not _WORKSPACE_ID.match(workspace_id) or (doc_path and not _DOC_PATH.match(doc_path)):
        return None
    return RoomKey(workspace_id, doc_path)


async def sync_endpoint(websocket: WebSocket, workspace_id: str, doc_path: str = "") -> None:
    services: Services = websocket.app.state.services
    settings = services.settings
    key = room_key(workspace_id, doc_path)
    if key is None:
        await refuse(websocket, status=400, code="bad_request", close=CLOSE_4400_BAD_MESSAGE,
                     message="invalid workspace id or document path")
        return
    if services.connections >= settings.max_connections:
        await refuse(websocket, status=503, code="server_full", close=CLOSE_1013_SERVER_FULL,
                     message=CLOSE_1013_SERVER_FULL.reason)
        return
    await websocket.accept()
    services.connections += 1
    try:
        channel = StarletteChannel(websocket, max_message_size=settings.max_message_size)
        await services.rooms.serve(key, channel)
    finally:
        services.connections -= 1
