"""Document content over REST, for agents and bots that do not speak the sync protocol.

``/workspaces/{id}/document`` is the workspace's main document; ``/workspaces/{id}/documents/{path}``
any other. ``GET`` returns the content as JSON; ``GET .../update`` a binary Yjs update (a diff when a
``state_vector`` is given); ``POST .../update`` applies a binary Yjs update that then reaches every
connected client and is stored like any client's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from server.access import Access, require, resolve_access
from server.auth import Principal
from server.document_view import ViewError, ViewTimeout
from server.errors import BadRequest, NotFoundError, PayloadTooLarge, ServiceError, UnknownWorkspace
from server.protocol import ProtocolError
from server.room import DocumentBroken, Room, RoomKey
from server.vocabulary import Role
from server.yjs_format import check_state_vector, check_update_soon

from .deps import CurrentUser, ServicesDep, WorkspaceAccess, WorkspaceId
from .schemas import DocumentContent, UpdateApplied

router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["documents"])

OCTET_STREAM = "application/octet-stream"


class DocumentUnreadable(ServiceError):
    status_code, code = 422, "document_unreadable"


class DocumentUnavailable(ServiceError):
    status_code, code = 503, "document_view_timeout"


class DocumentReloaded(ServiceError):
    status_code, code = 503, "document_reloaded"


def document_path(doc_path: str = "") -> str:
    path = doc_path.strip("/")
    if path and not RoomKey.valid_path(path):
        raise BadRequest("invalid document path")
    return path


DocPath = Annotated[str, Depends(document_path)]


async def _room(services: ServicesDep, access: Access, path: str, *, create: bool = False) -> Room:
    """The document's room; reading a document that was never written is 404, not a creation."""
    key = RoomKey(access.workspace.id, path)
    if not create and not await services.rooms.exists(key):
        raise NotFoundError(f"document {path or '(main)'!r} does not exist in workspace {key.workspace_id!r}")
    return await services.rooms.open(key)


SEND_CHUNK = 256 * 1024


def large_response(body: bytes, media_type: str) -> Response:
    """A response that hands its body to the server in chunks: a multi-megabyte document then
    leaves the event loop free between chunks instead of holding it for one large write."""
    if len(body) <= SEND_CHUNK:
        return Response(body, media_type=media_type)

    async def chunks() -> AsyncIterator[memoryview]:
        view = memoryview(body)
        for start in range(0, len(body), SEND_CHUNK):
            yield view[start : start + SEND_CHUNK]

    return StreamingResponse(chunks(), media_type=media_type, headers={"Content-Length": str(len(body))})


def _decode_state_vector(value: str | None) -> bytes | None:
    if value is None:
        return None
    standard = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        vector = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("state_vector must be base64 (standard or URL-safe)") from None
    try:
        check_state_vector(vector)
    except ProtocolError as exc:
        raise BadRequest(f"state_vector is not a valid Yjs state vector: {exc}") from None
    return vector


async def _read_json(services: ServicesDep, access: Access, path: str) -> Response:
    room = await _room(services, access, path)
    try:
        body = await services.views.body(room)
    except DocumentBroken as exc:
        raise DocumentUnreadable(f"{exc}; it is being reloaded from storage") from None
    except ViewTimeout as exc:
        raise DocumentUnavailable(f"{exc}; read the document as a Yjs update at .../update") from None
    except ViewError as exc:
        raise DocumentUnreadable(
            f"the document's JSON view could not be built ({exc}); read it as a Yjs update at .../update"
        ) from None
    return large_response(body, "application/json")


async def _read_update(
    services: ServicesDep, access: Access, path: str, state_vector: str | None
) -> Response:
    vector = _decode_state_vector(state_vector)
    room = await _room(services, access, path)
    try:
        update = room.full_state() if vector is None or vector == b"\x00" else room.diff(vector)
    except DocumentBroken as exc:
        raise DocumentUnreadable(f"{exc}; it is being reloaded from storage") from None
    return large_response(update, OCTET_STREAM)


async def _apply(
    services: ServicesDep, user: Principal, workspace_id: str, path: str, request: Request
) -> UpdateApplied:
    """Apply a client's update. A write opens the workspace as a sync connection does (it may
    create it, or make the caller a member): only once the update is known to be valid."""
    try:
        require(await resolve_access(services.store, user, workspace_id), Role.EDITOR)
    except UnknownWorkspace:
        if not services.workspaces.may_create:
            raise
    body = await _read_body(request, services.settings.max_message_size)
    try:
        facts = await check_update_soon(body)
    except ProtocolError as exc:
        raise BadRequest(f"not a valid Yjs update: {exc}") from None
    access = await services.workspaces.open(user, workspace_id)
    require(access, Role.EDITOR)
    room = await _room(services, access, path, create=True)
    try:
        await room.apply_update(body, facts)
    except ProtocolError as exc:
        raise BadRequest(f"not a valid Yjs update: {exc}") from None
    except DocumentBroken as exc:
        raise DocumentReloaded(f"{exc}; send it again (an update applied twice changes nothing)") from None
    state = base64.b64encode(room.doc.get_state()).decode()
    return UpdateApplied(applied_bytes=len(body), state_vector=state)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes, and 400 if empty."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"update of {declared} bytes exceeds MAX_MESSAGE_SIZE ({limit})")
    body = bytearray()
    async for chunk in request.stream():  # bounded even without a Content-Length
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"update exceeds MAX_MESSAGE_SIZE ({limit} bytes)")
    if not body:
        raise BadRequest("empty body: send a binary Yjs update (application/octet-stream)")
    return bytes(body)


StateVector = Annotated[
    str | None,
    Query(
        description="base64 Yjs state vector: return only what it lacks (at most 8,000 characters)",
        max_length=8_000,
        pattern=r"^[A-Za-z0-9+/_=-]*$",
    ),
]
_binary: dict[int | str, dict[str, Any]] = {
    200: {"content": {OCTET_STREAM: {}}, "description": "A Yjs update (v1 encoding)"}
}
_upload = {"requestBody": {"content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("/document", response_model=DocumentContent, summary="The main document as JSON")
async def main_document(access: WorkspaceAccess, services: ServicesDep) -> Response:
    return await _read_json(services, access, "")


@router.get("/document/update", responses=_binary, summary="The main document as a Yjs update")
async def main_document_update(
    access: WorkspaceAccess, services: ServicesDep, state_vector: StateVector = None
) -> Response:
    return await _read_update(services, access, "", state_vector)


@router.post(
    "/document/update",
    response_model=UpdateApplied,
    openapi_extra=_upload,
    summary="Apply a Yjs update to the main document (editor)",
)
async def main_document_apply(
    workspace_id: WorkspaceId, user: CurrentUser, services: ServicesDep, request: Request
) -> UpdateApplied:
    return await _apply(services, user, workspace_id, "", request)


@router.get("/documents/{doc_path:path}/update", responses=_binary, summary="A document as a Yjs update")
async def document_update(
    path: DocPath, access: WorkspaceAccess, services: ServicesDep, state_vector: StateVector = None
) -> Response:
    return await _read_update(services, access, path, state_vector)


@router.post(
    "/documents/{doc_path:path}/update",
    response_model=UpdateApplied,
    openapi_extra=_upload,
    summary="Apply a Yjs update to a document (editor)",
)
async def document_apply(
    path: DocPath, workspace_id: WorkspaceId, user: CurrentUser, services: ServicesDep, request: Request
) -> UpdateApplied:
    return await _apply(services, user, workspace_id, path, request)


@router.delete("/documents/{doc_path:path}", status_code=204, summary="Delete a document (editor)")
async def delete_document(path: DocPath, access: WorkspaceAccess, services: ServicesDep) -> Response:
    await services.workspaces.delete_document(access, path)
    return Response(status_code=204)


@router.get("/documents/{doc_path:path}", response_model=DocumentContent, summary="A document as JSON")
async def document(path: DocPath, access: WorkspaceAccess, services: ServicesDep) -> Response:
    return await _read_json(services, access, path)
