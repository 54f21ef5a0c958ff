"""Document content over REST, for agents and bots that do not speak the sync protocol.

``/workspaces/{id}/document`` is the workspace's main document; ``/workspaces/{id}/documents/{path}``
any other. ``GET`` returns the content as JSON; ``GET .../update`` a binary Yjs update (a diff when a
``state_vector`` is given); ``POST .../update`` applies a binary Yjs update that then reaches every
connected client and is stored like any client's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pycrdt import Array, Doc, Map, Text, XmlFragment

from crdt_store import documents
from crdt_store import workspaces as workspace_store
from server.access import Access, Role, require
from server.errors import BadRequest, NotFoundError, ServiceError
from server.protocol import ProtocolError
from server.room import Room, RoomKey
from server.sync_endpoint import valid_doc_path

from .deps import ServicesDep, WorkspaceAccess
from .schemas import DocumentContent, UpdateApplied

router = APIRouter(prefix="/workspaces/{workspace_id}", tags=["documents"])

OCTET_STREAM = "application/octet-stream"


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


def document_path(doc_path: str = "") -> str:
    path = doc_path.strip("/")
    if path and not valid_doc_path(path):
        raise BadRequest("invalid document path")
    return path


DocPath = Annotated[str, Depends(document_path)]


async def _room(services: ServicesDep, access: Access, path: str, *, create: bool = False) -> Room:
    """The document's room; reading a document that was never written is 404, not a creation."""
    key = RoomKey(access.workspace.id, path)
    if not create and key not in services.rooms.rooms:
        if not await documents.document_exists(
            services.store.engine, workspace_id=key.workspace_id, path=path
        ):
            raise NotFoundError(
                f"document {path or '(main)'!r} does not exist in workspace {key.workspace_id!r}"
            )
    return await services.rooms.open(key)


def to_json(doc: Doc) -> dict[str, Any]:
    """Each root shared type as JSON. Yjs does not send a root's type, so it is read from the
    content: keyed entries make a map, XML nodes a fragment, characters a text, other items an array."""
    update = doc.get_update()
    copies: dict[type, Doc] = {}

    def root_as(name: str, kind: type) -> Any:
        # Reading a root as a type fixes its type in that document, so each type gets its own
        # copy (one per type, shared by all roots: typing one root leaves the others alone).
        if kind not in copies:
            copies[kind] = Doc()
            copies[kind].apply_update(update)
        return copies[kind].get(name, type=kind)

    content: dict[str, Any] = {}
    for name in list(doc.keys()):
        as_map = root_as(name, Map).to_py()
        if as_map:
            content[name] = as_map
            continue
        try:
            items = root_as(name, Array).to_py()
        except ValueError:  # holds XML nodes
            content[name] = str(root_as(name, XmlFragment))
            continue
        text = str(root_as(name, Text))
        if (
            items
            and text
            and all(isinstance(i, str) and len(i) == 1 for i in items)
            and "".join(items) == text
        ):
            content[name] = text
        else:
            content[name] = items if items else text
    return content


def _decode_state_vector(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest("state_vector must be base64 (standard or URL-safe)") from None


async def _read_json(services: ServicesDep, access: Access, path: str) -> DocumentContent:
    room = await _room(services, access, path)
    return DocumentContent(workspace_id=access.workspace.id, path=path, content=to_json(room.doc))


async def _read_update(
    services: ServicesDep, access: Access, path: str, state_vector: str | None
) -> Response:
    room = await _room(services, access, path)
    vector = _decode_state_vector(state_vector)
    try:
        update = room.doc.get_update(vector) if vector is not None else room.doc.get_update()
    except ValueError:
        raise BadRequest("state_vector is not a valid Yjs state vector") from None
    return Response(update, media_type=OCTET_STREAM)


async def _apply(services: ServicesDep, access: Access, path: str, request: Request) -> UpdateApplied:
    require(access, Role.EDITOR)
    limit = services.settings.max_message_size
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"update of {declared} bytes exceeds MAX_MESSAGE_SIZE ({limit})")
    body = bytearray()
    async for chunk in request.stream():  # bounded even without a Content-Length
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"update exceeds MAX_MESSAGE_SIZE ({limit} bytes)")
    body = bytes(body)
    if not body:
        raise BadRequest("empty body: send a binary Yjs update (application/octet-stream)")
    room = await _room(services, access, path, create=True)
    try:
        room.apply_update(body)
    except ProtocolError as exc:
        raise BadRequest(str(exc)) from None
    state = base64.b64encode(room.doc.get_state()).decode()
    return UpdateApplied(applied_bytes=len(body), state_vector=state)


StateVector = Annotated[
    str | None, Query(description="base64 Yjs state vector: return only what it lacks", max_length=1_000_000)
]
_binary = {200: {"content": {OCTET_STREAM: {}}, "description": "A Yjs update (v1 encoding)"}}
_upload = {"requestBody": {"content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("/document", response_model=DocumentContent, summary="The main document as JSON")
async def main_document(access: WorkspaceAccess, services: ServicesDep) -> DocumentContent:
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
    access: WorkspaceAccess, services: ServicesDep, request: Request
) -> UpdateApplied:
    return await _apply(services, access, "", request)


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
    path: DocPath, access: WorkspaceAccess, services: ServicesDep, request: Request
) -> UpdateApplied:
    return await _apply(services, access, path, request)


@router.delete("/documents/{doc_path:path}", status_code=204, summary="Delete a document (editor)")
async def delete_document(path: DocPath, access: WorkspaceAccess, services: ServicesDep) -> Response:
    require(access, Role.EDITOR)
    if not path:
        raise BadRequest("the main document cannot be deleted; delete the workspace instead")
    document_id = await workspace_store.delete_document(
        services.store.engine, workspace_id=access.workspace.id, path=path
    )
    services.close_document(access.workspace.id, path, document_id)
    services.workspace_update(access.workspace.id, "document_deleted", path=path)
    return Response(status_code=204)


@router.get("/documents/{doc_path:path}", response_model=DocumentContent, summary="A document as JSON")
async def document(path: DocPath, access: WorkspaceAccess, services: ServicesDep) -> DocumentContent:
    return await _read_json(services, access, path)
