"""Errors carrying a code and a message, and their one JSON shape:
``{"error": {"code": "...", "message": "..."}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crdt_store import Conflict, NotFound, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


class BadRequest(ServiceError):
    status_code, code = 400, "bad_request"


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


class NotFoundError(ServiceError):
    status_code, code = 404, "not_found"


class UnknownWorkspace(NotFoundError):
    code = "unknown_workspace"

    def __init__(self, workspace_id: str) -> None:
        super().__init__(f"workspace {workspace_id!r} does not exist")


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


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
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


# What clients are told when the database cannot be used; the reason goes to the log and to
# /health/database, not to every client.
DATABASE_UNAVAILABLE_CODE = "database_unavailable"
DATABASE_UNAVAILABLE_MESSAGE = "the database is unavailable; try again later"
DATABASE_RETRY_AFTER = "5"  # seconds, for the Retry-After header of a 503


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        if isinstance(exc, StoreUnavailable):
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return JSONResponse(
                error_body(DATABASE_UNAVAILABLE_CODE, DATABASE_UNAVAILABLE_MESSAGE),
                503,
                headers={"Retry-After": DATABASE_RETRY_AFTER},
            )
        status, code = {NotFound: (404, "not_found"), Conflict: (409, "conflict")}.get(
            type(exc), (503, "unavailable")
        )
        return JSONResponse(error_body(code, str(exc) if status != 503 else "storage unavailable"), status)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception and re-raises it after this response is sent.
        return JSONResponse(error_body("internal_error", "internal server error"), 500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        return JSONResponse(error_body("invalid_request", "request validation failed", details=details), 422)
