"""Edit a document of the collaboration server from Python with pycrdt-websocket.

Install the client packages (pycrdt-websocket and httpx-ws, the WebSocket client its channel is
written for), then run it against a server:

    pip install 'realtime-collaboration[client]'        # or: pip install pycrdt-websocket httpx-ws
    python examples/python_client.py ws://localhost:3006 ws-789 "Hello from Python"
    python examples/python_client.py ws://localhost:3006 ws-789 --path notes.md --token "$TOKEN"

It connects to ``ws://HOST:PORT/ws/workspaces/{workspace}[/{path}]``, waits until the document is
synced, appends the text (if given) to the document's ``text`` root, and prints that text. It exits
with status 1, saying why on stderr, when the server refuses the connection (for example 401
without a valid token, 404 for an unknown workspace), closes it before the sync, or does not
complete the sync within ``--timeout`` seconds.

How pycrdt-websocket 0.16 is used: its client side is ``pycrdt.Provider`` (the ``WebsocketProvider``
of earlier versions is gone), which talks through a ``pycrdt.Channel``; pycrdt-websocket ships
``HttpxWebsocket``, that channel on an httpx-ws connection. Two limits of the provider matter to a
longer-running program:

- It synchronizes the document only: it neither sends nor applies awareness (presence) messages.
  To show presence, keep a ``pycrdt.Awareness`` and send its updates through the same channel.
- It does not reconnect, and does not say when the server closed the connection: the channel
  just stops yielding messages (``Channel.closed`` below records the close code), and the next
  local edit makes the provider fail. To go on, open a new connection and a new ``Provider`` on
  the same ``Doc``: the sync sends what was edited meanwhile, and receives what was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from urllib.parse import quote, urlencode

import anyio
import httpx
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, WebSocketUpgradeError, aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket


class Channel(HttpxWebsocket):
    """pycrdt-websocket's httpx-ws channel, which also records why the server closed it.

    ``HttpxWebsocket`` ends its iteration on any error, so the provider stops without a word;
    here ``closed`` keeps the server's close frame and ``disconnected`` is set."""

    def __init__(self, websocket: AsyncWebSocketSession, path: str) -> None:
        super().__init__(websocket, path)
        self.closed: WebSocketDisconnect | None = None
        self.disconnected = anyio.Event()

    async def recv(self) -> bytes:
        try:
            return await super().recv()
        except WebSocketDisconnect as exc:
            self.closed = exc
            self.disconnected.set()
            raise
        except Exception:
            self.disconnected.set()
            raise


def document_url(server: str, workspace: str, path: str | None = None, token: str | None = None) -> str:
    """``{server}/ws/workspaces/{workspace}[/{path}][?token=...]``, each part percent-encoded."""
    url = f"{server.rstrip('/')}/ws/workspaces/{quote(workspace, safe='')}"
    if path:
        url += "/" + quote(path, safe="/")
    if token:
        url += "?" + urlencode({"token": token})
    return url


async def wait_synced(provider: Provider, channel: Channel, timeout: float) -> bool:
    """Wait until the first sync completed; ``False`` if the connection closed or time ran out."""
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as group:

            async def first_of(event: anyio.Event) -> None:
                await event.wait()
                group.cancel_scope.cancel()

            group.start_soon(first_of, provider.synced)
            group.start_soon(first_of, channel.disconnected)
    return provider.synced.is_set()


async def edit(url: str, insert: str | None, *, root: str = "text", timeout: float = 10.0) -> str:
    """Sync the document at ``url``, append ``insert`` to its text ``root`` and return that text.

    Raises ``ConnectionError`` when the document could not be synced."""
    doc: Doc = Doc()
    text = doc.get(root, type=Text)

    async def read_refusal(response: httpx.Response) -> None:
        if response.status_code != 101:  # keep the JSON body that says why, for the error message
            await response.aread()

    async with (
        httpx.AsyncClient(event_hooks={"response": [read_refusal]}) as client,
        aconnect_ws(url, client) as websocket,
    ):
        channel = Channel(websocket, url)
        async with Provider(doc, channel) as provider:
            synced = await wait_synced(provider, channel, timeout)
            if synced and insert:
                text += insert
        # Leaving the provider sends what is still queued; leaving the connection closes it.
    if not synced:
        if channel.closed is not None:
            raise ConnectionError(
                f"the server closed the connection before the sync: {channel.closed.code} "
                f"{channel.closed.reason}"
            )
        if channel.disconnected.is_set():
            raise ConnectionError("the connection was lost before the sync")
        raise ConnectionError(f"the document was not synced within {timeout} s")
    return str(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", help="the server's base URL, such as ws://localhost:3006")
    parser.add_argument("workspace", help="workspace id, such as ws-789")
    parser.add_argument("text", nargs="?", help="text to append to the document (none: only print it)")
    parser.add_argument("--path", help="a document path in the workspace (default: its main document)")
    parser.add_argument(
        "--token",
        default=os.environ.get("COLLAB_TOKEN"),
        help="a token, when the server has JWT_SECRET set (default: $COLLAB_TOKEN)",
    )
    parser.add_argument("--root", default="text", help="the text root to edit (default: text)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the sync")
    args = parser.parse_args(argv)
    if "/" in args.workspace:
        parser.error("a workspace id cannot contain '/' (put the document's path in --path)")

    url = document_url(args.server, args.workspace, args.path, args.token)
    try:
        text = asyncio.run(edit(url, args.text, root=args.root, timeout=args.timeout))
    except WebSocketUpgradeError as exc:  # refused before the upgrade: the JSON body says why
        print(f"refused: HTTP {exc.response.status_code} {exc.response.text}", file=sys.stderr)
        return 1
    except (ConnectionError, OSError, httpx.HTTPError) as exc:  # httpx.ConnectError: nothing listens
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
