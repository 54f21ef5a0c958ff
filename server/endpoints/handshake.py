"""Admitting a WebSocket: every check before the upgrade, and every refusal, made in one place: an
HTTP response with the JSON error body (and its headers, such as ``Retry-After``) where the server
supports it, otherwise a close frame whose code follows the status (``close_codes.refusal``).

In order: the instance is not draining (503), the ``Origin`` is allowed (403), the address has
connection attempts left (429), a place is reserved (503 at ``MAX_CONNECTIONS``, 429 over the
address's share) without an await between the check and the count, the token (401), the user's
share (429). The place is the caller's to release (``Admitted.ticket``) however the connection ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from .. import metrics
from ..auth import Principal, TokenError, authenticate
from ..close_codes import reason_of, refusal
from ..errors import (
    Draining,
    NotFoundError,
    OriginNotAllowed,
    RateLimited,
    ServiceError,
    Unauthorized,
    error_body,
)
from ..limits import Ticket, client_ip, origin_allowed, request_origin
from ..services import Services

log = logging.getLogger("server.endpoints")


async def refuse(scope: Scope, send: Send, error: ServiceError) -> None:
    """Refuse before the upgrade completes. Logged once, with the reason."""
    metrics.error_sent("websocket", error.code)
    client = scope.get("client") or ("?", 0)
    log.info(
        "refused WebSocket %s from %s:%s: %d %s: %s",
        scope["path"],
        *client,
        error.status_code,
        error.code,
        error.message,
    )
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(error.code, error.message)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
        await send({"type": "websocket.http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        close = refusal(error.status_code)
        await send({"type": "websocket.close", "code": close.code, "reason": reason_of(error.message)})


@dataclass(slots=True)
class Admitted:
    principal: Principal
    subprotocol: str | None
    ticket: Ticket  # released by the endpoint when the connection ends


async def admit(scope: Scope, receive: Receive, send: Send, services: Services) -> Admitted | None:
    """Wait for the client's connect and run every check. Returns the admitted connection, or None
    once the request has been refused."""
    if (await receive())["type"] != "websocket.connect":
        return None
    try:
        return await _admit(scope, services)
    except ServiceError as exc:
        await refuse(scope, send, exc)
        return None


async def _admit(scope: Scope, services: Services) -> Admitted:
    settings = services.settings
    if services.draining:
        raise Draining()
    if not origin_allowed(scope, settings):
        raise OriginNotAllowed(f"origin {request_origin(scope)!r} is not allowed (CORS_ORIGINS)")
    ip = client_ip(scope)
    limiter = services.limiter
    wait = await limiter.hit(limiter.connect_ip, "connect-ip", ip)
    if wait is not None:
        metrics.rate_limited("connect_ip", "websocket")
        raise RateLimited("too many connection attempts from this address; retry later", retry_in=wait)
    if services.draining:  # began during the await
        raise Draining()
    ticket = services.admission.reserve(ip)  # no await between the check and the count
    try:
        principal, subprotocol = authenticate(scope, settings)
        if not principal.guest:
            ticket.claim_user(principal.user_id)
    except TokenError as exc:
        ticket.release()
        raise Unauthorized(str(exc)) from None
    except ServiceError:
        ticket.release()
        raise
    return Admitted(principal, subprotocol, ticket)


Serve = Callable[[Scope, Receive, Send, Services, Admitted], Awaitable[None]]


async def serve_admitted(scope: Scope, receive: Receive, send: Send, serve: Serve) -> None:
    """Admit the upgrade (or refuse it), then ``serve`` it; its place is given back however the
    connection ends."""
    services: Services = scope["app"].state.services
    admitted = await admit(scope, receive, send, services)
    if admitted is None:
        return
    try:
        await serve(scope, receive, send, services, admitted)
    finally:
        admitted.ticket.release()


async def refuse_unknown_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket upgrade to a path that serves none: 404 with the JSON body."""
    if (await receive())["type"] == "websocket.connect":
        await refuse(
            scope,
            send,
            NotFoundError(
                "no WebSocket endpoint here: documents are at /ws/workspaces/{workspace_id}[/{path}], "
                "events at /ws, /ws/agents and /ws/workspaces"
            ),
        )
