"""The README runs as written: every Python, JavaScript and shell snippet is either run here, against
a real server, or says why not (``<!-- not run: ... -->``). A snippet is marked
``<!-- snippet: NAME -->``; the only change made to it is the address (``localhost:3006`` becomes
the test server's, and the CLI example's port 4000 a free one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.config import Settings
from tests.interop.node import JS_DIR, node_binary
from tests.support.auth import SECRET, client, token
from tests.support.server import ROOT, RunningServer, free_port, run_server
from tests.support.wait import wait_until

README = ROOT / "README.md"
RUNNABLE = {"bash", "sh", "shell", "python", "javascript", "js"}
BLOCK = re.compile(
    r"(?:<!-- (snippet|not run): ([^\n]*?) -->\n)?^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE
)
RUN_HERE = {
    "quick-start",
    "cli",
    "tokens",
    "yjs-node",
    "pycrdt",
    "rest-agent",
    "events-quick-start",
    "agent-report",
    "status",
}


@dataclass(frozen=True)
class Block:
    marker: str | None
    label: str
    language: str
    code: str


def blocks() -> list[Block]:
    return [Block(m, label, lang, code) for m, label, lang, code in BLOCK.findall(README.read_text())]


def snippet(name: str) -> str:
    [code] = [b.code for b in blocks() if b.marker == "snippet" and b.label == name]
    return code


def localize(code: str, port: int) -> str:
    return code.replace("localhost:3006", f"127.0.0.1:{port}")


def test_every_runnable_snippet_is_run_or_says_why() -> None:
    found = blocks()
    assert found[0].language == "bash" and found[0].code.splitlines()[0].startswith("make run")
    unmarked = [b.code[:60] for b in found if b.language in RUNNABLE and b.marker is None]
    assert not unmarked, (
        f"README snippets neither run by tests/ops/test_readme.py nor marked 'not run': {unmarked}"
    )
    named = [b.label for b in found if b.marker == "snippet"]
    assert sorted(named) == sorted(RUN_HERE)
    assert all(b.label.strip() for b in found if b.marker == "not run")


# -- running things ---------------------------------------------------------------------------------------


def environment(**extra: str) -> dict[str, str]:
    """This environment without the service's settings (a snippet sets its own), plus ``extra``."""
    settings = {name.upper() for name in Settings.model_fields}
    return {**{k: v for k, v in os.environ.items() if k not in settings}, **extra}


@contextlib.asynccontextmanager
async def session(
    args: list[str], env: dict[str, str], output: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A process in its own session (with whatever it starts in the background), output to a file;
    the whole session is ended on exit."""
    with output.open("wb") as sink:
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        await end_session(process)


async def end_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's session, then wait (a poll with a deadline) until none of it is
    left; SIGKILL what is left after 30 s."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        process.poll()  # reaps the leader, which would otherwise linger as a zombie of the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(10)


async def exited(process: subprocess.Popen[bytes], timeout: float = 120) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


def write_script(code: str, suffix: str, directory: Path) -> Path:
    path = directory / f"readme_{uuid.uuid4().hex[:8]}{suffix}"
    path.write_text(code)
    return path


async def document_text(server: RunningServer, workspace: str, path: str = "") -> str:
    url = f"/workspaces/{workspace}/document" + (f"s/{path}" if path else "")
    async with client(server.http_url, "reader") as http:
        response = await http.get(url)
    if response.status_code != 200:
        return ""
    text: str = response.json()["content"].get("text", "")
    return text


# -- the snippets -----------------------------------------------------------------------------------------


async def test_quick_start_make_run_serves(tmp_path: Path) -> None:
    # The second command, make test, is this suite itself.
    first = snippet("quick-start").splitlines()[0].split("#")[0].strip()
    assert first == "make run"
    port = free_port()
    env = environment(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    async with session(["bash", "-c", first], env, tmp_path / "out.log") as process:

        async def serving() -> bool:
            assert process.poll() is None, (tmp_path / "out.log").read_text()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"http://127.0.0.1:{port}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(serving, timeout=120)
    assert f"ws://127.0.0.1:{port}/ws/workspaces" in (tmp_path / "out.log").read_text()


async def test_cli_snippet(tmp_path: Path) -> None:
    port = free_port()
    code = snippet("cli").replace("--port 4000", f"--port {port}")
    env = environment(DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}", HOST="127.0.0.1")
    async with session(["bash", "-e", "-c", code], env, tmp_path / "out.log") as process:
        assert await exited(process) == 0, (tmp_path / "out.log").read_text()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    output = (tmp_path / "out.log").read_text()
    assert "HEARTBEAT_INTERVAL, default: 15.0" in output
    assert '"logger": "server"' in output  # the server started by the snippet logs JSON


async def test_tokens_snippet(tmp_path: Path) -> None:
    port = free_port()
    env = environment(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}")
    code = localize(snippet("tokens"), port)
    async with session(["bash", "-e", "-c", code], env, tmp_path / "out.log") as process:
        assert await exited(process) == 0, (tmp_path / "out.log").read_text()
    output = (tmp_path / "out.log").read_text()
    assert '"id":"ws-789"' in output and '"visibility":"private"' in output
    assert '"role":"owner"' in output, output
    assert "auth:      JWT (HS256)" in output


async def test_yjs_client_under_node(server: RunningServer) -> None:
    script = write_script(localize(snippet("yjs-node"), server.port), ".mjs", JS_DIR)
    process = await asyncio.create_subprocess_exec(node_binary(), str(script), cwd=JS_DIR)
    try:
        await wait_until(lambda: _has(server, "ws-789", "Hello"), timeout=30)
    finally:
        process.terminate()
        await process.wait()
        script.unlink()


async def _has(server: RunningServer, workspace: str, text: str) -> bool:
    return text in await document_text(server, workspace)


async def test_pycrdt_client(server: RunningServer, tmp_path: Path) -> None:
    script = write_script(localize(snippet("pycrdt"), server.port), ".py", tmp_path)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    await wait_until(lambda: _has(server, "ws-789", "Hello from Python"), timeout=10)


async def test_rest_agent_on_a_new_document(server: RunningServer, tmp_path: Path) -> None:
    minted_by = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "server", "token", "--user", "bot"],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    minted = minted_by.stdout.strip()
    script = write_script(localize(snippet("rest-agent"), server.port), ".py", tmp_path)
    outputs = []
    for _ in range(2):  # the first run creates the document, the second reads and extends it
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            env=environment(TOKEN=minted),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0].count("Summary: ...") == 1 and outputs[1].count("Summary: ...") == 2
    assert (await document_text(server, "ws-789", "notes.md")).count("Summary: ...") == 2


@contextlib.asynccontextmanager
async def jwt_server(make_settings: Callable[..., Settings]) -> AsyncIterator[RunningServer]:
    async with run_server(make_settings(jwt_secret=SECRET)) as server:
        async with client(server.http_url, "alice") as alice:
            for workspace in ("ws-789", "workspace-789"):
                created = await alice.post("/workspaces", json={"id": workspace, "name": workspace})
                assert created.status_code == 201, created.text
        yield server


async def test_event_quick_start_with_a_token(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    async with jwt_server(make_settings) as server:
        script = write_script(localize(snippet("events-quick-start"), server.port), ".mjs", JS_DIR)
        output = tmp_path / "node.log"
        env = environment(TOKEN=token("alice"))
        try:
            async with session([node_binary(), str(script)], env, output):
                await wait_until(lambda: output.read_text().count("type: 'ack'") == 2, timeout=30)
                async with client(server.http_url, "indexer", role="service") as service:
                    # The agent works for alice: a service names her as its user (the spec's flow).
                    for kind, data in (
                        ("agent_execution_start", {"user_id": "alice"}),
                        ("agent_execution_complete", {}),
                    ):
                        response = await service.post(
                            "/agents/agent-123/events", json={"type": kind, "data": data}
                        )
                        assert response.status_code == 202, response.text
                await wait_until(lambda: "agent_execution_complete" in output.read_text(), timeout=30)
        finally:
            script.unlink()
    text = output.read_text()
    assert "Received:" in text and "type: 'welcome'" in text and "user_id: 'alice'" in text


async def test_agent_reporting_over_the_socket(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with jwt_server(make_settings) as server:
        script = write_script(localize(snippet("agent-report"), server.port), ".py", tmp_path)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            env=environment(TOKEN=token("indexer", role="service")),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "welcome" and len(lines) == 4
        assert all("'type': 'ack'" in line for line in lines[1:]), lines
        async with client(server.http_url, "alice") as alice:
            agent = (await alice.get("/agents/agent-123")).json()
    state = agent["agent"]
    assert (state["status"], state["result"], state["workspace_id"]) == (
        "completed",
        "42 files indexed",
        "ws-789",
    )


async def test_status_and_metrics_snippet(server: RunningServer, tmp_path: Path) -> None:
    code = localize(snippet("status"), server.port)
    async with session(
        ["bash", "-e", "-o", "pipefail", "-c", code], environment(), tmp_path / "out.log"
    ) as process:
        assert await exited(process, 60) == 0
    output = (tmp_path / "out.log").read_text()
    assert '"version":' in output and '"connections_by_endpoint":' in output
    assert 'collab_websocket_connections{endpoint="sync"}' in output
