"""Origins: CORS_ORIGINS governs the REST API's CORS answers and the WebSocket Origin check; unset,
development admits any origin and production refuses to start."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
import websockets

from server.config import ConfigError, Settings, load_settings
from tests.protection.helpers import refusal_of
from tests.support.auth import SECRET, token
from tests.support.server import ROOT, run_server
from tests.support.wait import wait_until
from tests.support.yclient import yclient

SettingsFactory = Callable[..., Settings]
APP = "https://app.example"
EVIL = "http://evil.example"


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_listed_origins_get_cors_answers_and_others_do_not(make_settings: SettingsFactory) -> None:
    settings = make_settings(jwt_secret=SECRET, cors_origins=f"{APP}, https://other.example:8443")
    async with run_server(settings) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        allowed = await http.options("/workspaces", headers=preflight(APP))
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "POST" in allowed.headers["access-control-allow-methods"]

        refused = await http.options("/workspaces", headers=preflight(EVIL))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        # The real request from the app's origin, with its token, can be read by the page.
        auth = {"Authorization": f"Bearer {token('alice')}", "Origin": APP}
        answer = await http.get("/workspaces", headers=auth)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        from_evil = await http.get("/workspaces", headers={**auth, "Origin": EVIL})
        assert "access-control-allow-origin" not in from_evil.headers


async def test_websockets_from_unlisted_origins_are_refused_before_the_upgrade(
    make_settings: SettingsFactory, workspace: str
) -> None:
    settings = make_settings(cors_origins=APP)
    async with run_server(settings) as server:
        doc = server.doc_url(workspace)
        for url in (doc, f"{server.ws_url}/ws", f"{server.ws_url}/ws/agents"):
            status, body, _ = await refusal_of(url, origin=EVIL)  # type: ignore[arg-type]
            assert (status, body["error"]["code"]) == (403, "origin_not_allowed"), url
        # The listed origin, and clients that send no Origin (servers, bots), are admitted, and
        # see each other's edits.
        async with (
            websockets.connect(doc, origin=APP, max_size=None) as browser,  # type: ignore[arg-type]
            yclient(doc) as bot,
        ):
            bot.text().insert(0, "from a bot")
            assert isinstance(await browser.recv(), bytes)
        assert server.services.connections <= 2
        await wait_until(lambda: server.services.connections == 0)


async def test_unset_in_development_any_origin_is_admitted(
    make_settings: SettingsFactory, workspace: str
) -> None:
    async with run_server(make_settings()) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        answer = await http.options("/workspaces", headers=preflight(EVIL))
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == EVIL
        async with websockets.connect(server.doc_url(workspace), origin=EVIL):  # type: ignore[arg-type]
            pass


async def test_a_star_admits_any_origin(make_settings: SettingsFactory, workspace: str) -> None:
    async with run_server(make_settings(cors_origins="*")) as server:
        async with websockets.connect(server.doc_url(workspace), origin=EVIL):  # type: ignore[arg-type]
            pass


def test_production_without_cors_origins_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "x" * 32)
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        load_settings()
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env={"ENVIRONMENT": "production", "JWT_SECRET": "x" * 32, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "CORS_ORIGINS" in result.stderr
    monkeypatch.setenv("CORS_ORIGINS", APP)
    assert load_settings().allowed_origins == frozenset({APP})


@pytest.mark.parametrize("value", ["app.example", "https://app.example/path", "https://a.example?x=1"])
def test_cors_origins_must_be_origins(value: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        load_settings(cors_origins=value)
