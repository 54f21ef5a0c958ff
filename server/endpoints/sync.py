"""``/ws/workspaces/{workspace_id}[/{doc_path}]``: the Yjs sync endpoint (y-websocket protocol).

Served as plain ASGI, ahead of the framework's routing: admit (``handshake``), open the document
(``WorkspaceService.open``), accept, and hand an ``AsgiChannel``, read no faster than the
connection's rate (``limits.PacedChannel``), to the room manager.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import Receive, Scope, Send

from ..channel import AsgiChannel, Channel, frame_writer
from ..errors import BadRequest, Draining, NotFoundError, ServiceError, store_errors_as_service_errors
from ..limits import ConnectionRate, PacedChannel
from ..room import RoomKey
from ..services import Services
from .handshake import Admitted, refuse, serve_admitted

SYNC_PREFIX = "/ws/workspaces/"
SYNC_PREFIX_BYTES = SYNC_PREFIX.encode()


def is_sync_request(scope: Scope) -> bool:
    """A WebSocket to a document: its path as the client wrote it (``raw_path``, which
    ``room_key`` reads too) starts with ``SYNC_PREFIX``; a percent-encoded prefix is not one."""
    path = scope.get("raw_path") or scope["path"].encode()
    return (
        scope["type"] == "websocket" and len(path) > len(SYNC_PREFIX) and path.startswith(SYNC_PREFIX_BYTES)
    )


def room_key(scope: Scope) -> RoomKey | None:
    """The room the client asks for: the path after the prefix, as the client wrote it (y-websocket
    appends the room name), split into workspace id and document path on the first literal ``/``,
    each part then percent-decoded as UTF-8 (RFC 3986 2.1); so an encoded ``%2F`` stays inside
    its part. None when that is not a valid room."""
    raw = scope.get("raw_path")
    if not raw:
        return RoomKey.parse(scope["path"][len(SYNC_PREFIX) :])
    workspace_id, _, path = raw.partition(b"?")[0][len(SYNC_PREFIX) :].partition(b"/")
    try:
        return RoomKey.checked(unquote_to_bytes(workspace_id).decode(), unquote_to_bytes(path).decode())
    except UnicodeDecodeError:
        return None


def sync_endpoint(scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
    """The connection's coroutine (``serve_admitted``), returned rather than awaited so that it
    holds no frame of its own for the connection's lifetime."""
    return serve_admitted(scope, receive, send, _serve)


async def _serve(scope: Scope, receive: Receive, send: Send, services: Services, admitted: Admitted) -> None:
    principal = admitted.principal
    settings = services.settings
    try:
        with store_errors_as_service_errors():
            key = room_key(scope)
            if key is None:
                raise BadRequest("invalid workspace id or document path")
            access = await services.workspaces.open(principal, key.workspace_id)
            if not access.role.can_write and not await services.rooms.exists(key):
                # Opening a document creates it: a viewer's read-only connection may not.
                raise NotFoundError(
                    f"document {key.path or '(main)'!r} does not exist; viewers cannot create it"
                )
            if services.draining:  # began while the workspace was opened
                raise Draining()
    except ServiceError as exc:
        await refuse(scope, send, exc)
        return
    await send({"type": "websocket.accept", "subprotocol": admitted.subprotocol})
    channel: Channel = AsgiChannel(
        receive,
        send,
        path=scope["path"],
        max_message_size=settings.max_message_size,
        frames=frame_writer(scope),
    )
    if (
        settings.rate_limit_sync_messages
        or settings.rate_limit_sync_bytes
        or settings.rate_limit_sync_time_ms
    ):
        rate = ConnectionRate(
            messages=settings.rate_limit_sync_messages,
            size=settings.rate_limit_sync_bytes,
            close_after=settings.rate_limit_close_after,
            time_ms=settings.rate_limit_sync_time_ms,
        )
        channel = PacedChannel(channel, rate)
    await services.rooms.serve(key, channel, user=principal, can_write=access.role.can_write)
