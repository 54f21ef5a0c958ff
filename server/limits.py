"""Limits every transport enforces, in one place."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import PayloadTooLarge, error_body

Scope = dict[str, Any]
ASGIApp = Any


class BodyLimit:
    """ASGI middleware: an HTTP request body over ``limit`` bytes is refused with 413 and the JSON
    error body as soon as it is known to be too large (from ``Content-Length``, or while it
    arrives), before the application has read any of it. Requests for which ``exempt(scope)`` is
    true (routes that enforce their own, larger limit as they read) pass through."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Callable[[Scope], bool]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # Without a (truthful) Content-Length, the body is read here, up to the limit, before the
        # application sees it (the limit is small: JSON, not documents).
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            received += len(message.get("body", b""))
            if received > self.limit:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        error = PayloadTooLarge(f"the request body is larger than {self.limit} bytes")
        body = json.dumps(error_body(error.code, error.message)).encode()
        length = str(len(body)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
