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

The view is built in a separate process (``DocumentViews``): building it for a large document takes
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
    doc: Doc[Any] = Doc()
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
    if isinstance(value, Array | list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, Map | dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, Doc):
        return {}  # an unloaded subdocument: Y.Doc.toJSON() of no shared types
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, bytes | bytearray):
        return {str(index): byte for index, byte in enumerate(value)}
    return None


def _js_sorted(pairs: Any) -> list[tuple[str, Any]]:
    """Sorted by key as JavaScript's ``Array.prototype.sort`` sorts strings: by UTF-16 code units."""
    return sorted(pairs, key=lambda pair: str(pair[0]).encode("utf-16-be", "surrogatepass"))


def _xml(node: XmlElement | XmlFragment) -> str:
    children = "".join(_xml_child(child) for child in node.children)
    if not isinstance(node, XmlElement):
        return children
    attributes = "".join(f' {key}="{_js_string(value)}"' for key, value in _js_sorted(node.attributes))
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
        tags = _js_sorted(attributes.items())
        for name, value in tags:
            pairs = _js_sorted(_for_in(value))
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
    if isinstance(value, int | float):
        return _js_number(float(value))
    if isinstance(value, list):
        return ",".join("" if item is None else _js_string(item) for item in value)
    return "[object Object]"


def _js_number(value: float) -> str:
    """``Number.prototype.toString()`` (ECMAScript, Number::toString): the shortest digits that
    round trip (as ``repr``), written plainly from 1e-6 to below 1e21 and with an exponent outside."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _js_number(-value)
    # repr's shortest digits as d1 d2 ... dk times 10^(n - k): n is where the point goes.
    text, _, exponent = repr(value).partition("e")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    digits = (whole + fraction).lstrip("0")
    n = len(whole) - (len(whole + fraction) - len((whole + fraction).lstrip("0"))) + int(exponent or 0)
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{'+' if n > 0 else '-'}{abs(n - 1)}"


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


_Worker = tuple[multiprocessing.process.BaseProcess, Pipe]


class DocumentViews:
    """Builds JSON views in ``processes`` worker processes, each view within ``timeout`` seconds.

    A view that overruns kills its process (a new one starts for the next view), so a document
    pycrdt cannot read costs its readers a 503, and other documents' views go on in the other
    processes. Views are cached per room and document version, and concurrent readers of one
    version share one build.
    """

    def __init__(self, *, timeout: float = 10.0, processes: int = 2) -> None:
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Worker | None] = asyncio.Queue()
        for _ in range(processes):
            self._idle.put_nowait(None)  # a slot whose process starts when first needed
        self._running: set[_Worker] = set()
        self._views: weakref.WeakKeyDictionary[Room, tuple[int, asyncio.Future[bytes]]] = (
            weakref.WeakKeyDictionary()
        )

    async def __aenter__(self) -> DocumentViews:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for worker in list(self._running):
            self._discard(worker)

    async def body(self, room: Room) -> bytes:
        """The room's ``document_body`` (UTF-8 JSON). Raises ``ViewError`` or ``ViewTimeout``,
        or ``DocumentBroken`` if the document cannot be encoded."""
        cached = self._views.get(room)
        if cached is None or cached[0] != room.version or _failed(cached[1]):
            key = json.dumps(list(room.key)).encode()
            future = asyncio.ensure_future(self._build(key, room.full_state()))
            self._views[room] = cached = (room.version, future)
        return await asyncio.shield(cached[1])

    async def _build(self, key: bytes, update: bytes) -> bytes:
        slot = await self._idle.get()
        worker: _Worker | None = None
        try:
            worker = slot or self._start()
            exchange = asyncio.to_thread(_exchange, worker[1], key, update)
            reply = await asyncio.wait_for(exchange, self.timeout)
        except TimeoutError:
            log.warning("building a JSON view took over %g s: its worker process is stopped", self.timeout)
            self._discard(worker)
            raise ViewTimeout(f"building the view took longer than {self.timeout:g} s") from None
        except (EOFError, OSError) as exc:
            self._discard(worker)
            raise ViewError(f"the view worker stopped ({exc.__class__.__name__})") from None
        finally:
            self._idle.put_nowait(worker if worker in self._running else None)
        if reply[:1] != b"\x00":
            raise ViewError(reply[1:].decode(errors="replace"))
        return reply[1:]

    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="document-views", daemon=True)
        process.start()
        theirs.close()
        worker = (process, ours)
        self._running.add(worker)
        return worker

    def _discard(self, worker: _Worker | None) -> None:
        """Kill the process; a thread still waiting on its pipe then sees it close."""
        if worker is None:
            return
        self._running.discard(worker)
        process = worker[0]
        process.kill()
        asyncio.get_running_loop().run_in_executor(None, process.join, 5)


def _failed(future: asyncio.Future[bytes]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
