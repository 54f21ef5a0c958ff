"""Health, status and metrics: ``/health``, ``/health/database``, ``/health/redis``, ``/ws/health``,
``/status``, ``/connections``, ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server import __version__, metrics
from server.logs import redact

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


PROBE_TIMEOUT = 2.0  # seconds to open a TCP connection to a neighbouring service


async def probe(url: str) -> dict[str, Any]:
    """Whether a TCP connection to the URL's host and port (80/443 by scheme when omitted) opens
    within ``PROBE_TIMEOUT`` seconds: ``{"url" (credentials redacted), "reachable", "latency_ms"
    or "error"}``."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError as exc:
        return {"url": shown, "reachable": False, "error": f"invalid URL: {exc}"}
    if not host:
        return {"url": shown, "reachable": False, "error": "the URL names no host"}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or exc.__class__.__name__
        return {"url": shown, "reachable": False, "error": f"{host}:{port}: {reason}"}
    writer.close()
    latency = round((time.perf_counter() - started) * 1000, 2)
    return {"url": shown, "reachable": True, "latency_ms": latency}


@router.get("/status", summary="Service status")
async def status(services: ServicesDep) -> dict[str, Any]:
    """Version, uptime (seconds), environment, auth mode, database dialect, broker (``memory``
    or ``redis``, with this instance's id), rooms loaded, open connections (in total and by
    endpoint), persistence (updates accepted but not stored, and how long the oldest has
    waited, in seconds), and whether ``AI_AGENTS_URL`` and ``IDE_BRIDGE_URL`` answer (only
    those that are set)."""
    settings = services.settings
    neighbours = {"ai_agents": settings.ai_agents_url, "ide_bridge": settings.ide_bridge_url}
    set_urls = {name: url for name, url in neighbours.items() if url}
    probes = await asyncio.gather(*(probe(url) for url in set_urls.values()))
    return {
        "service": "realtime-collaboration",
        "version": __version__,
        "environment": settings.environment.value,
        "uptime_seconds": round(time.time() - services.started_at, 1),
        "auth": "jwt" if settings.auth_enabled else "open",
        "database": services.store.dialect,
        "broker": services.broker.status(),
        "replication_repairs": services.replication.repairs,
        "connections": services.connections,
        "connections_by_endpoint": metrics.connections_by_endpoint(services),
        "rooms": len(services.rooms.rooms),
        "pending_updates": services.writer.pending,
        "persistence": {
            "pending_updates": services.writer.pending,
            "lag_seconds": round(services.writer.lag, 3),
        },
        "dependencies": dict(zip(set_urls, probes, strict=True)),
    }


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "The Prometheus text exposition format"}},
)
async def prometheus_metrics(services: ServicesDep) -> Response:
    body, content_type = metrics.exposition(services)
    return Response(body, media_type=content_type)


@router.get("/connections", summary="Active connections")
async def connections(services: ServicesDep) -> dict[str, Any]:
    rooms = [
        {"workspace_id": room.key.workspace_id, "path": room.key.path, "connections": len(room.connections)}
        for room in services.rooms.rooms.values()
    ]
    return {"total": services.connections, "rooms": rooms}
