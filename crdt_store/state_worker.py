"""Building a document's encoded state (``yjs_state.StateBuilder``) in a separate process.

pycrdt holds the GIL while it works, and encoding a large document takes long (about 100 ms
for 20 MB of text here): done in the server's process, that would stop the event loop, and a
thread would not help. So compaction sends the snapshot and the update rows, a batch at a time,
to one worker process, which applies them and sends the encoded state back. The server's
process only holds the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection as Pipe
from multiprocessing.process import BaseProcess

from .yjs_state import StateBuilder

log = logging.getLogger(__name__)


def _serve(pipe: Pipe) -> None:
    """The worker's loop. Requests: ``("start",)``, ``("apply", [update, ...])``, ``("encode",)``;
    replies: ``(True, result)``, or ``(False, "Error: message")`` when pycrdt refused the data."""
    builder = StateBuilder()
    while True:
        try:
            request = pickle.loads(pipe.recv_bytes())
        except EOFError:
            return
        result: bytes | None = None
        try:
            if request[0] == "start":
                builder = StateBuilder()
            elif request[0] == "apply":
                builder.apply(request[1])
            else:
                result = builder.encode()
                builder = StateBuilder()
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which gives up
            builder = StateBuilder()
            reply: tuple[bool, object] = (False, f"{exc.__class__.__name__}: {exc}"[:500])
        else:
            reply = (True, result)
        pipe.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


def _exchange(pipe: Pipe, request: tuple[object, ...]) -> tuple[bool, object]:
    pipe.send_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
    reply: tuple[bool, object] = pickle.loads(pipe.recv_bytes())
    return reply


class RemoteBuilder:
    """A ``StateBuilder`` in the worker process, used through one ``StateWorker.build()``."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe

    async def apply(self, updates: list[bytes]) -> None:
        """Apply updates in the worker. Raises ``ValueError`` when they are not Yjs updates."""
        await self._call(("apply", updates))

    async def encode(self) -> bytes:
        """The document's encoded state (see ``StateBuilder.encode``)."""
        state = await self._call(("encode",))
        assert isinstance(state, bytes)
        return state

    async def _call(self, request: tuple[object, ...]) -> object:
        done, result = await asyncio.to_thread(_exchange, self._pipe, request)
        if not done:
            raise ValueError(f"building the document's state failed: {result}")
        return result


class StateWorker:
    """One worker process building one document at a time, started by ``start`` (or by the
    first build). Starting waits for the fork server, which loads this package first (about a
    second, once per server process), so it happens in a thread, never on the event loop.

    A build cancelled on the way, or whose process died, stops the process; the next build starts
    a new one. Other failures (pycrdt refusing the data, the database failing) leave it running.
    """

    def __init__(self) -> None:
        # A fork server (Unix): started once per process with the main module and this one
        # loaded, it forks each worker cheaply and without the state of the server's threads and
        # event loop. As with any multiprocessing start method but fork, the main module must
        # not start a server when imported (``if __name__ == "__main__"``).
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["__main__", __name__])
        self._process: tuple[BaseProcess, Pipe] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the worker process now rather than at the first build."""
        async with self._lock:
            if self._process is None:
                await asyncio.to_thread(self._start)

    @contextlib.asynccontextmanager
    async def build(self) -> AsyncIterator[RemoteBuilder]:
        """Exclusive use of the worker for one document."""
        async with self._lock:
            worker = self._process if self._process is not None else await asyncio.to_thread(self._start)
            process, pipe = worker
            builder = RemoteBuilder(pipe)
            try:
                await builder._call(("start",))
                yield builder
            except (asyncio.CancelledError, EOFError, OSError):
                # Cancelled mid-exchange, or the process died: its pipe can no longer be trusted.
                self._stop(process, pipe)
                raise

    async def close(self) -> None:
        if self._process is not None:
            process, pipe = self._process
            self._stop(process, pipe)

    def _start(self) -> tuple[BaseProcess, Pipe]:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="compaction", daemon=True)
        process.start()
        theirs.close()
        self._process = (process, ours)
        return self._process

    def _stop(self, process: BaseProcess, pipe: Pipe) -> None:
        """Kill the process (a thread still waiting on the pipe then sees it end), then close."""
        if self._process is not None and self._process[0] is process:
            self._process = None
        process.kill()
        pipe.close()
        asyncio.get_running_loop().run_in_executor(None, process.join, 5)
