"""``python -m server``: every setting a flag, listed by ``--help`` with its variable and default;
flags over the environment; the start banner; token minting without loading the server; the
container's health check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest

from server.__main__ import overrides_of, parse_args
from server.config import Settings, load_settings
from tests.support.auth import SECRET
from tests.support.server import ROOT, free_port, start_process
from tests.support.wait import wait_until


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "PORT")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_setting_with_its_variable_and_default() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name, field in Settings.model_fields.items():
        flag, variable = "--" + name.replace("_", "-"), name.upper()
        assert flag in text, flag
        assert f"{variable}" in text, variable
        default = field.get_default(call_default_factory=True)
        if isinstance(default, int | str) and not isinstance(default, bool):
            assert f"{variable}" in text and str(getattr(default, "value", default)) in text, name
    assert "PORT, default: 3006" in text
    assert "--auto-create-workspaces" in text and "--no-auto-create-workspaces" in text
    assert "ENVIRONMENT (development|staging|production)" in text


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.setenv("MAX_CONNECTIONS", "7")
    monkeypatch.setenv("AUTO_CREATE_WORKSPACES", "true")
    args = parse_args(["--port", "4100", "serve", "--no-auto-create-workspaces", "--log-format", "json"])
    settings = load_settings(**overrides_of(args))
    assert (settings.port, settings.max_connections, settings.auto_create_workspaces) == (4100, 7, False)
    assert settings.json_logs
    assert load_settings(**overrides_of(parse_args([]))).port == 4000


def test_a_bad_flag_value_names_the_variable() -> None:
    result = run_cli("--heartbeat-interval", "soon")
    assert result.returncode == 2
    assert "HEARTBEAT_INTERVAL" in result.stderr


async def test_start_banner_and_flag_port(tmp_path: Path) -> None:
    port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'collab.db'}", "PORT": "1"}
    # The port comes from the flag (the environment says 1); start_process waits on PORT, so
    # the process is started by hand here.
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port), "--host", "127.0.0.1"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        async def serving() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"http://127.0.0.1:{port}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(serving, timeout=30)
        check = run_cli("healthcheck", "--port", str(port), "--host", "127.0.0.1")
        assert check.returncode == 0, check.stderr
        assert run_cli("healthcheck", "--port", str(free_port())).returncode == 1
    finally:
        process.terminate()
        process.wait(30)
    output = log_path.read_text()
    assert f"documents: ws://127.0.0.1:{port}/ws/workspaces/{{workspace_id}}" in output
    assert f"http://127.0.0.1:{port}/docs" in output and f"http://127.0.0.1:{port}/demo" in output
    assert "auth:      open (no JWT_SECRET)" in output
    assert f"store:     SQLite database {tmp_path / 'collab.db'}" in output


async def test_banner_names_jwt_and_postgresql_without_the_password(tmp_path: Path, pg_url: str) -> None:
    with_password = pg_url.replace("postgresql://postgres@", "postgresql://postgres:pw-not-shown@")
    server = await start_process(
        {"JWT_SECRET": SECRET, "DATABASE_URL": with_password},
        tmp_path / "server.log",
    )
    await server.stop()
    output = server.log()
    assert "auth:      JWT (HS256)" in output
    assert "store:     PostgreSQL database" in output
    assert "pw-not-shown" not in output


def test_token_minting_loads_nothing_of_the_server() -> None:
    program = (
        "import sys\n"
        "from server.__main__ import main\n"
        "code = main(['token', '--user', 'indexer', '--role', 'service', '--ttl', '60'])\n"
        "heavy = ('fastapi', 'uvicorn', 'sqlalchemy', 'pycrdt', 'crdt_store')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "print('loaded:', ','.join(loaded))\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "JWT_SECRET": SECRET}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    minted, loaded = result.stdout.splitlines()
    assert loaded == "loaded: "
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("indexer", "service")
    assert claims["exp"] - claims["iat"] == 60


async def test_token_without_a_secret_names_the_caller_of_an_open_server(tmp_path: Path) -> None:
    result = run_cli("token", "--user", "alice", "--name", "Alice")
    assert result.returncode == 0
    assert "JWT_SECRET is not set" in result.stderr and "throwaway key" in result.stderr
    minted = result.stdout.strip()
    open_server = await start_process({"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}, tmp_path / "s.log")
    try:
        async with httpx.AsyncClient(
            base_url=open_server.http_url, headers={"Authorization": f"Bearer {minted}"}
        ) as http:
            private = {"id": "ws-a", "name": "A", "visibility": "private"}
            created = await http.post("/workspaces", json=private)
            assert created.status_code == 201, created.text
            mine = await http.get("/workspaces/ws-a")
            assert mine.status_code == 200 and mine.json()["role"] == "owner"
        async with httpx.AsyncClient(base_url=open_server.http_url) as guest:
            refused = await guest.post("/workspaces", json={"name": "B", "visibility": "private"})
            assert refused.status_code == 400
            assert "python -m server token" in refused.json()["error"]["message"]
    finally:
        await open_server.stop()
