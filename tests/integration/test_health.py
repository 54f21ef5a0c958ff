"""Health and status endpoints report the real state of their dependencies."""

from __future__ import annotations

from collections.abc import Callable

from server.config import Settings
from tests.support.auth import client
from tests.support.server import RunningServer, run_server
from tests.support.yclient import yclient


async def test_health_and_status_on_embedded_defaults(server: RunningServer, workspace: str) -> None:
    async with client(server.http_url) as http, yclient(server.doc_url(workspace)):
        health = (await http.get("/health")).json()
        assert health["status"] == "ok"
        assert (
            health["checks"]["database"]["status"] == "ok"
            and health["checks"]["database"]["dialect"] == "sqlite"
        )
        assert health["checks"]["redis"]["status"] == "disabled"
        assert (await http.get("/health/database")).json()["status"] == "ok"
        assert (await http.get("/ws/health")).json()["connections"] == 1
        status = (await http.get("/status")).json()
        assert (status["auth"], status["database"], status["connections"], status["rooms"]) == (
            "open",
            "sqlite",
            1,
            1,
        )
        rooms = (await http.get("/connections")).json()["rooms"]
        assert rooms == [{"workspace_id": workspace, "path": "", "connections": 1}]


async def test_redis_health_pings_the_configured_server(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    async with run_server(make_settings(redis_url=redis_url)) as server, client(server.http_url) as http:
        assert (await http.get("/health/redis")).json()["status"] == "ok"
    async with (
        run_server(make_settings(redis_url="redis://127.0.0.1:1/0")) as server,
        client(server.http_url) as http,
    ):
        response = await http.get("/health/redis")
        assert response.status_code == 503 and response.json()["status"] == "down"
        overall = await http.get("/health")
        assert overall.status_code == 503 and overall.json()["status"] == "degraded"
