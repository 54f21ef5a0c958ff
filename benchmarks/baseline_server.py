"""The baseline: pycrdt-websocket's own ASGI server (``WebsocketServer`` + ``ASGIServer``), in memory.

Run as ``uvicorn benchmarks.baseline_server:app``; the room is the request path, so the URLs the
load generator uses for our server work unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pycrdt.websocket import ASGIServer, WebsocketServer

websocket_server = WebsocketServer(auto_clean_rooms=False)
_asgi = ASGIServer(websocket_server)
_stack = contextlib.AsyncExitStack()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _stack.enter_async_context(websocket_server)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _asgi(scope, receive, send)
