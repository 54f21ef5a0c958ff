"""Health and status: ``/health``, ``/health/database``, ``/health/redis``, ``/ws/health``,
``/status``, ``/connections``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from crdt_store import StoreError, StoreUnavailable

from .deps import ServicesDep

router = APIRouter(tags=["health"])


async def _database(services: ServicesDep) -> dict[str, Any]:
    """Reachability, and how many accepted updates wait to be stored (kept in memory and
    retried while the database is down)."""
    waiting = {"pending_updates": services.writer.pending, "last_error": services.writer.last_error}
    started = time.perf_counter()
    try:
        await services.store.ping()
    except StoreUnavailable as exc:
        return {"status": "down", "dialect": services.store.dialect, "error": exc.reason[:300], **waiting}
    except StoreError as exc:
        return {"status": "down", "dialect": services.store.dialect, "error": str(exc)[:300], **waiting}
    latency = round((time.perf_counter() - started) * 1000, 2)
    if services.writer.last_error is not None:
        # Reachable, but storing updates fails (a SQLite file locked by someone else, a full disk).
        return {
            "status": "write_failing",
            "dialect": services.store.dialect,
            "latency_ms": latency,
            "error": services.writer.last_error[:300],
            **waiting,
        }
    return {"status": "ok", "dialect": services.store.dialect, "latency_ms": latency, **waiting}


async def _redis(services: ServicesDep) -> dict[str, Any]:
    broker = services.broker
    if services.settings.redis_url is None:
        return {"status": "disabled", "detail": "REDIS_URL is not set; using the in-process broker"}
    started = time.perf_counter()
    try:
        await asyncio.wait_for(broker.ping(), timeout=2)
    except (RedisError, OSError, TimeoutError) as exc:
        return {
            "status": "down",
            "instance": broker.instance_id,
            "error": f"{exc.__class__.__name__}: {exc}"[:200],
        }
    return {
        "status": "ok",
        "instance": broker.instance_id,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def _answer(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=200 if body["status"] in ("ok", "disabled") else 503)


@router.get("/health", summary="Liveness and dependency checks")
async def health(services: ServicesDep) -> JSONResponse:
    checks = {"database": await _database(services), "redis": await _redis(services)}
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
        "status": "ok",
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
