"""``/status`` completes the spec (version, uptime, environment, broker, rooms, connections by
endpoint, persistence lag, neighbours' reachability); ``/docs`` and ``/redoc`` need no other site."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from server import __version__
from server.config import Settings
from tests.support.auth import client
from tests.support.events import event_client
from tests.support.server import free_port, run_server
from tests.support.yclient import yclient


async def test_status_reports_the_instance_and_its_neighbours(
    make_settings: Callable[..., Settings], workspace: str
) -> None:
    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    neighbour = await asyncio.start_server(accept, "127.0.0.1", 0)
    neighbour_port = neighbour.sockets[0].getsockname()[1]
    settings = make_settings(
        ai_agents_url=f"http://agents:s3cr3t-pw@127.0.0.1:{neighbour_port}/v1",
        ide_bridge_url=f"http://127.0.0.1:{free_port()}",
    )
    try:
        async with (
            run_server(settings) as server,
            client(server.http_url) as http,
            yclient(server.doc_url(workspace)),
            event_client(f"{server.ws_url}/ws/agents"),
        ):
            status = (await http.get("/status")).json()
    finally:
        neighbour.close()
        await neighbour.wait_closed()
    assert status["version"] == __version__
    assert status["environment"] == "development" and status["uptime_seconds"] >= 0
    assert status["broker"]["kind"] == "memory"
    assert status["rooms"] == 1 and status["connections"] == 2
    assert status["connections_by_endpoint"] == {"sync": 1, "/ws": 0, "/ws/agents": 1, "/ws/workspaces": 0}
    assert status["persistence"]["pending_updates"] == 0 and status["persistence"]["lag_seconds"] == 0
    agents, bridge = status["dependencies"]["ai_agents"], status["dependencies"]["ide_bridge"]
    assert agents["reachable"] is True and agents["latency_ms"] >= 0
    assert "s3cr3t-pw" not in agents["url"]
    assert bridge["reachable"] is False and "127.0.0.1" in bridge["error"]


async def test_status_omits_neighbours_that_are_not_set(make_settings: Callable[..., Settings]) -> None:
    async with run_server(make_settings()) as server, client(server.http_url) as http:
        assert (await http.get("/status")).json()["dependencies"] == {}


async def test_docs_are_served_with_their_assets(make_settings: Callable[..., Settings]) -> None:
    async with run_server(make_settings()) as server, client(server.http_url) as http:
        for page in ("/docs", "/redoc"):
            html = (await http.get(page)).text
            references = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html)
            urls = {a or b for a, b in references}
            assert urls, html
            assert not [u for u in urls if "//" in u], urls  # nothing from another site
            for url in urls:
                response = await http.get(url)
                assert response.status_code == 200 and response.content, url
        assert (await http.get("/docs/static/../../pyproject.toml")).status_code == 404
        assert (await http.get("/docs/static/nothing.js")).status_code == 404
