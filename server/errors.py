"""Errors carrying a code and a message, and their one JSON shape:
``{"error": {"code": "...", "message": "..."}}``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crdt_store import Conflict, NotFound, StoreError

from . import metrics

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        self.details = details  # per-field problems: [{"loc": [...], "msg": ...}]

    def body(self) -> dict[str, Any]:
        """The error's fields as clients see them: code, message and any details."""
        extra = {"details": self.details} if self.details else {}
        return {"code": self.code, "message": self.message, **extra}


class BadRequest(ServiceError):
    status_code, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


class ValidationFailed(ServiceError):
    """A value is well-formed but outside a configured limit; ``details`` name each field."""

    status_code, code = 422, "validation_failed"


class NotFoundError(ServiceError):
    status_code, code = 404, "not_found"


class UnknownWorkspace(NotFoundError):
    code = "unknown_workspace"

    def __init__(self, workspace_id: str) -> None:
        super().__init__(f"workspace {workspace_id!r} does not exist")


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


class ServerFull(ServiceError):
    status_code, code = 503, "server_full"


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header (RFC 9110 10.2.3): whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RateLimited(ServiceError):
    """Too many requests, messages or connection attempts: 429 with ``Retry-After``; close 4429."""

    status_code, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_in: float) -> None:
        super().__init__(message, headers=retry_after(retry_in))
        self.retry_in = retry_in


class TooManyConnections(ServiceError):
    """This user or address already holds as many open connections as allowed."""

    status_code, code = 429, "too_many_connections"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers=retry_after(5))


class Draining(ServiceError):
    """The instance is shutting down: new connections go to another instance."""

    status_code, code = 503, "draining"

    def __init__(self, message: str = "this instance is shutting down; reconnect to another") -> None:
        super().__init__(message, headers=retry_after(1))


class OriginNotAllowed(ServiceError):
    status_code, code = 403, "origin_not_allowed"


# What clients are told when the database cannot be used; the reason goes to the log and to
# /health/database, not to every client.
DATABASE_UNAVAILABLE_MESSAGE = "the database is unavailable; try again later"
DATABASE_RETRY_AFTER = "5"  # seconds, for the Retry-After header of a 503 (RFC 9110 10.2.3)


class StorageUnavailable(ServiceError):
    status_code, code = 503, "database_unavailable"

    def __init__(self, message: str = DATABASE_UNAVAILABLE_MESSAGE) -> None:
        super().__init__(message, headers={"Retry-After": DATABASE_RETRY_AFTER})


class ConflictError(ServiceError):
    status_code, code = 409, "conflict"


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    422: "invalid_request",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    503: "unavailable",
}


def service_error_of(exc: StoreError) -> ServiceError:
    """What a client is told about a store error: 404 for a row that is gone, 409 for a
    uniqueness conflict, otherwise 503 ``database_unavailable`` (the cause is logged here)."""
    if isinstance(exc, NotFound):
        return NotFoundError(str(exc))
    if isinstance(exc, Conflict):
        return ConflictError(str(exc))
    log.warning("database call failed: %s", exc)
    metrics.DATABASE_ERRORS.labels("request").inc()
    return StorageUnavailable()


def client_error_of(exc: BaseException) -> ServiceError | None:
    """What a client is told about ``exc``: itself if it is a ``ServiceError``, the mapping of
    ``service_error_of`` for a ``StoreError``, else None (a fault of ours: log it)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, StoreError):
        return service_error_of(exc)
    return None


@contextmanager
def store_errors_as_service_errors() -> Iterator[None]:
    """Inside the block, a ``StoreError`` surfaces as the ``ServiceError`` of ``service_error_of``,
    so transports handle one kind of error."""
    try:
        yield
    except StoreError as exc:
        raise service_error_of(exc) from exc


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A whole HTTP/1.1 response (RFC 9112) with ``error_body(code, message)`` as its JSON body,
    ``headers`` added, ending the connection (``connection: close``): for answers written to the
    socket below the ASGI application (a refused request head, a refused WebSocket upgrade)."""
    body = json.dumps(error_body(code, message)).encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return b"".join(lines) + body


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        metrics.error_sent("rest", exc.code)
        return JSONResponse({"error": exc.body()}, exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return await _service_error(request, service_error_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        metrics.error_sent("rest", code)
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected_error(_: Request, _exc: Exception) -> JSONResponse:
        # Starlette logs the exception and re-raises it after this response is sent.
        metrics.error_sent("rest", "internal_error")
        return JSONResponse(error_body("internal_error", "internal server error"), 500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        metrics.error_sent("rest", "invalid_request")
        return JSONResponse(error_body("invalid_request", "request validation failed", details=details), 422)
