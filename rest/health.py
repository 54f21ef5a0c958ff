"""Health and status: ``/health``, ``/health/database``, ``/health/redis``, ``/ws/health``,
``/status``, ``/connections``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .deps import ServicesDep

router = APIRouter(tags=["health"])


async def _database(services: ServicesDep) -> dict[str, Any]:
    return await services.writer.health()


async def _redis(services: ServicesDep) -> dict[str, Any]:
    return await services.broker.health()


def _answer(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=200 if body["status"] in ("ok", "disabled") else 503)


@router.get("/health", summary="Liveness and dependency checks")
async def health(services: ServicesDep) -> JSONResponse:
    checks = {"database": await _database(services), "redis": await _redis(services)}
    if services.draining:  # shutting down: load balancers send new clients elsewhere
        return JSONResponse({"status": "draining", "checks": checks}, status_code=503)
    healthy = all(check["status"] in ("ok", "disabled") for check in checks.values())
    return _answer({"status": "ok" if healthy else "degraded", "checks": checks})


@router.get("/health/database", summary="Database reachability")
async def health_database(services: ServicesDep) -> JSONResponse:
    return _answer(await _database(services))


@router.get("/health/redis", summary="Redis reachability")
async def health_redis(services: ServicesDep) -> JSONResponse:
    return _answer(await _redis(services))


@router.get("/ws/health", summary="WebSocket service health")
async def health_websocket(services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    return {
        "status": "draining" if services.draining else "ok",
        "connections": services.connections,
        "max_connections": settings.max_connections,
        "rooms": len(services.rooms.rooms),
        "heartbeat_interval": settings.heartbeat_interval,
    }


@router.get("/status", summary="Service status")
async def status(services: ServicesDep) -> dict[str, Any]:
    settings = services.settings
    return {
        "service": "realtime-collaboration",
        "environment": settings.environment.value,
        "uptime_seconds": round(time.time() - services.started_at, 1),
        "auth": "jwt" if settings.auth_enabled else "open",
        "database": services.store.dialect,
        "broker": services.broker.status(),
        "replication_repairs": services.replication.repairs,
        "connections": services.connections,
        "rooms": len(services.rooms.rooms),
        "pending_updates": services.writer.pending,
    }


@router.get("/connections", summary="Active connections")
async def connections(services: ServicesDep) -> dict[str, Any]:
    rooms = [
        {"workspace_id": room.key.workspace_id, "path": room.key.path, "connections": len(room.connections)}
        for room in services.rooms.rooms.values()
    ]
    return {"total": services.connections, "rooms": rooms}
