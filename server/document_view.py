"""A document's content as JSON: for each root shared type, what Yjs's own ``toJSON()`` gives.

Yjs does not send a root's type (an app names it when it calls ``doc.getText(name)``), so the
type is read from the document's structure first (``yjs_format.root_kinds``), never by trying
types: reading a root as a type it is not makes pycrdt loop. Then every value follows Yjs:

- text: its characters (``YText.toString``: embeds and formatting are not text);
- array: its values; map: its entries; nested shared types as their own ``toJSON()``;
- XML fragment, element and text: Yjs's XML string (``YXmlElement.toString``: lower-case tag,
  attributes sorted by name; ``YXmlText.toString``: formatting as nested tags, sorted);
- values as ``JSON.stringify`` writes them: a ``Uint8Array`` as an object of its bytes, a
  non-finite number as ``null``, a subdocument as ``{}``.

The view is built in a separate process (``ViewWorker``): building it for a large document takes
long enough to hold the event loop, and a document that pycrdt cannot read must cost one process,
not the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import weakref
from multiprocessing.connection import Connection as Pipe
from typing import TYPE_CHECKING, Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from .yjs_format import RootKind, root_kinds

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger(__name__)

ROOT_TYPES: dict[RootKind, type[Text | Array[Any] | Map[Any] | XmlFragment]] = {
    RootKind.TEXT: Text,
    RootKind.ARRAY: Array,
    RootKind.MAP: Map,
    RootKind.XML_FRAGMENT: XmlFragment,
}
MAX_SAFE_INTEGER = 2**53 - 1


class ViewError(Exception):
    """The document's JSON view could not be built; the message says why."""


class ViewTimeout(ViewError):
    """Building the view took longer than allowed."""


def document_json(update: bytes) -> str:
    """The JSON text of ``{root name: root.toJSON()}`` for the document whose whole state is
    ``update`` (a v1 update, as ``Doc.get_update()`` encodes it). Raises ``ProtocolError`` for a
    malformed update, ``RecursionError`` for types nested deeper than the interpreter allows."""
    kinds = root_kinds(update)
    doc: Doc = Doc()
    doc.apply_update(update)
    content = {name: _json(doc.get(name, type=ROOT_TYPES[kinds[name]])) for name in sorted(kinds)}
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json(value: Any) -> Any:
    """A value as ``JSON.stringify(value.toJSON?.() ?? value)`` would write it."""
    if isinstance(value, XmlText):
        return _xml_text(value)
    if isinstance(value, XmlElement | XmlFragment):
        return _xml(value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, Array):
        return [_json(item) for item in value]
    if isinstance(value, Map):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, Doc):
        return {}  # an unloaded subdocument: Y.Doc.toJSON() of no shared types
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return {str(index): byte for index, byte in enumerate(value)}
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    return None


def _xml(node: XmlElement | XmlFragment) -> str:
    children = "".join(_xml_child(child) for child in node.children)
    if not isinstance(node, XmlElement):
        return children
    attributes = "".join(f' {key}="{_js_string(value)}"' for key, value in sorted(node.attributes))
    tag = (node.tag or "undefined").lower()
    return f"<{tag}{attributes}>{children}</{tag}>"


def _xml_child(child: Any) -> str:
    if isinstance(child, XmlText):
        return _xml_text(child)
    if isinstance(child, XmlElement | XmlFragment):
        return _xml(child)
    return _js_string(_json(child))


def _xml_text(text: XmlText) -> str:
    """``YXmlText.toString``: each run of the delta wrapped in its formatting, as tags."""
    runs: list[tuple[Any, dict[str, Any]]] = []
    for insert, attributes in text.diff():
        attributes = attributes or {}
        if isinstance(insert, str) and runs and isinstance(runs[-1][0], str) and runs[-1][1] == attributes:
            runs[-1] = (runs[-1][0] + insert, attributes)  # Yjs's delta merges equal runs
        else:
            runs.append((insert, attributes))
    out = []
    for insert, attributes in runs:
        tags = sorted(attributes.items())
        for name, value in tags:
            pairs = sorted(_for_in(value))
            out.append(f"<{name}" + "".join(f' {key}="{_js_string(v)}"' for key, v in pairs) + ">")
        out.append(insert if isinstance(insert, str) else _js_string(_json(insert)))
        out.extend(f"</{name}>" for name, _ in reversed(tags))
    return "".join(out)


def _for_in(value: Any) -> list[tuple[str, Any]]:
    """The (key, value) pairs JavaScript's ``for ... in`` visits."""
    if isinstance(value, dict):
        return [(str(key), item) for key, item in value.items()]
    if isinstance(value, str | list):
        return [(str(index), item) for index, item in enumerate(value)]
    return []


def _js_string(value: Any) -> str:
    """``String(value)`` in JavaScript, for the JSON values a document holds."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, list):
        return ",".join("" if item is None else _js_string(item) for item in value)
    return "[object Object]"


# -- the worker process ---------------------------------------------------------------------------


def document_body(workspace_id: str, path: str, update: bytes) -> bytes:
    """The REST body ``{"workspace_id", "path", "content": document_json(update)}``, UTF-8."""
    head = json.dumps({"workspace_id": workspace_id, "path": path}, ensure_ascii=False)
    return f'{head[:-1]},"content":{document_json(update)}}}'.encode()


def _serve(pipe: Pipe) -> None:
    """The worker's loop: the room's key (JSON) and its document's state in; ``0`` + the body, or
    ``1`` + an error, out."""
    while True:
        try:
            workspace_id, path = json.loads(pipe.recv_bytes())
            update = pipe.recv_bytes()
        except EOFError:
            return
        try:
            reply = b"\x00" + document_body(workspace_id, path, update)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the caller
            reply = b"\x01" + f"{exc.__class__.__name__}: {exc}"[:500].encode()
        pipe.send_bytes(reply)


def _exchange(pipe: Pipe, key: bytes, update: bytes) -> bytes:
    pipe.send_bytes(key)
    pipe.send_bytes(update)
    return pipe.recv_bytes()


class ViewWorker:
    """Builds JSON views in one worker process, one at a time, each within ``timeout`` seconds.

    A view that overruns kills the process (a new one starts for the next view). Views are cached
    per room and document version, and concurrent readers of one version share one build.
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._worker: tuple[multiprocessing.process.BaseProcess, Pipe] | None = None
        self._lock = asyncio.Lock()
        self._views: weakref.WeakKeyDictionary[Room, tuple[int, asyncio.Future[bytes]]] = (
            weakref.WeakKeyDictionary()
        )

    async def __aenter__(self) -> ViewWorker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._worker is not None:
            self._discard(self._worker)

    async def body(self, room: Room) -> bytes:
        """The room's ``document_body`` (UTF-8 JSON). Raises ``ViewError`` or ``ViewTimeout``."""
        cached = self._views.get(room)
        if cached is None or cached[0] != room.version or _failed(cached[1]):
            key = json.dumps(list(room.key)).encode()
            future = asyncio.ensure_future(self._build(key, room.full_state()))
            self._views[room] = cached = (room.version, future)
        return await asyncio.shield(cached[1])

    async def _build(self, key: bytes, update: bytes) -> bytes:
        async with self._lock:
            worker = self._worker or self._start()
            try:
                exchange = asyncio.to_thread(_exchange, worker[1], key, update)
                reply = await asyncio.wait_for(exchange, self.timeout)
            except TimeoutError:
                log.warning(
                    "building a JSON view took over %g s: its worker process is stopped", self.timeout
                )
                self._discard(worker)
                raise ViewTimeout(f"building the view took longer than {self.timeout:g} s") from None
            except (EOFError, OSError) as exc:
                self._discard(worker)
                raise ViewError(f"the view worker stopped ({exc.__class__.__name__})") from None
        if reply[:1] != b"\x00":
            raise ViewError(reply[1:].decode(errors="replace"))
        return reply[1:]

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, Pipe]:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="document-views", daemon=True)
        process.start()
        theirs.close()
        self._worker = (process, ours)
        return self._worker

    def _discard(self, worker: tuple[multiprocessing.process.BaseProcess, Pipe]) -> None:
        """Kill the process; a thread still waiting on its pipe then sees it close."""
        if self._worker is worker:
            self._worker = None
        process = worker[0]
        process.kill()
        asyncio.get_running_loop().run_in_executor(None, process.join, 5)


def _failed(future: asyncio.Future[bytes]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
