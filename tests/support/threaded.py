"""The real service on an ephemeral port, served from its own thread and event loop, for tests
whose driver is synchronous (hypothesis, schemathesis) and for watching the server's loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from server.__main__ import uvicorn_config
from server.app import create_app
from server.config import Settings


@dataclass
class LoopWatch:
    """The longest stretch of the server loop's own CPU time between two of its turns.

    A task on the server's loop wakes every ``period`` seconds and measures the loop thread's CPU
    time (``time.thread_time``) since its last wake: the time one callback (or the few that ran
    in between) held the loop. CPU time, not wall time, so that a busy machine does not count."""

    period: float = 0.005
    longest: float = 0.0
    _stop: bool = field(default=False, repr=False)
    _settled: bool = field(default=False, repr=False)

    async def run(self) -> None:
        last = time.thread_time()
        while not self._stop:
            await asyncio.sleep(self.period)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now

    def reset(self) -> None:
        if not self._settled:
            # The server shares this process with the test session: a full garbage collection
            # that happens to start on the server's thread would scan every object the session
            # made (a pause that grows with the suite), which is not the server's work.
            gc.collect()
            gc.freeze()
            self._settled = True
        self.longest = 0.0


@dataclass
class ThreadedServer:
    app: Any
    port: int
    loop: asyncio.AbstractEventLoop
    watch: LoopWatch

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def doc_url(self, workspace_id: str, path: str = "") -> str:
        return f"{self.ws_url}/ws/workspaces/{workspace_id}" + (f"/{path}" if path else "")

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextlib.contextmanager
def server_thread(settings: Settings) -> Iterator[ThreadedServer]:
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    watch = LoopWatch()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=serve, name="server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    watcher = asyncio.run_coroutine_threadsafe(watch.run(), loop)
    try:
        yield ThreadedServer(app, server.servers[0].sockets[0].getsockname()[1], loop, watch)
    finally:
        watch._stop = True
        with contextlib.suppress(Exception):
            watcher.result(5)
        server.should_exit = True
        thread.join(30)
        loop.close()
