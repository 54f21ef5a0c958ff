"""Authentication: every bad token is refused before the WebSocket upgrade and on REST."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support.auth import SECRET, claims, client, raw_token, token
from tests.support.server import ROOT, RunningServer, start_process
from tests.support.yclient import yclient

BAD_TOKENS = {
    "malformed": lambda: "not-a-jwt",
    "garbage segments": lambda: "abc.def.ghi",
    "wrong signature": lambda: raw_token({"alg": "HS256", "typ": "JWT"}, claims(), key="another-secret-" * 4),
    "alg none": lambda: raw_token({"alg": "none", "typ": "JWT"}, claims(), key=None),
    "other algorithm": lambda: raw_token({"alg": "HS512", "typ": "JWT"}, claims()),
    "expired": lambda: raw_token({"alg": "HS256"}, claims(exp=int(time.time()) - 3600)),
    "not yet valid": lambda: raw_token({"alg": "HS256"}, claims(nbf=int(time.time()) + 3600)),
    "no expiry": lambda: jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256"),
    "bad role": lambda: raw_token({"alg": "HS256"}, claims(role="superuser")),
    "expiry out of range": lambda: raw_token({"alg": "HS256"}, claims(exp=10**400)),
    "not-before out of range": lambda: raw_token({"alg": "HS256"}, claims(nbf=10**400)),
    "control character in the user id": lambda: raw_token({"alg": "HS256"}, claims("mal\nlory")),
}


async def create_workspace(
    server: RunningServer, workspace: str, owner: str = "alice", **body: object
) -> None:
    async with client(server.http_url, owner) as http:
        response = await http.post("/workspaces", json={"id": workspace, "name": workspace, **body})
        assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_token_is_refused_before_upgrade(
    auth_server: RunningServer, workspace: str, case: str
) -> None:
    await create_workspace(auth_server, workspace)
    bad = BAD_TOKENS[case]()
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(auth_server.doc_url(workspace) + f"?token={bad}"):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert b'"unauthorized"' in response.body
    async with client(auth_server.http_url) as http:
        rest = await http.get(f"/workspaces/{workspace}", headers={"Authorization": f"Bearer {bad}"})
    assert rest.status_code == 401
    assert rest.json()["error"]["code"] == "unauthorized"
    assert bad not in rest.text  # never echo the token


async def test_missing_token_is_refused(auth_server: RunningServer, workspace: str) -> None:
    await create_workspace(auth_server, workspace)
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(auth_server.doc_url(workspace)):
            pass
    assert refused.value.response.status_code == 401
    assert b"missing token" in refused.value.response.body
    async with client(auth_server.http_url) as http:
        assert (await http.get("/workspaces")).status_code == 401


@pytest.mark.parametrize("where", ["query", "header", "subprotocol"])
async def test_token_accepted_from_query_header_or_subprotocol(
    auth_server: RunningServer, workspace: str, where: str
) -> None:
    await create_workspace(auth_server, workspace)
    good = token("alice")
    url = auth_server.doc_url(workspace)
    options: dict[str, object] = {}
    if where == "query":
        url += f"?token={good}"
    elif where == "header":
        options["additional_headers"] = {"Authorization": f"Bearer {good}"}
    else:
        options["subprotocols"] = ["bearer", good]
    async with websockets.connect(url, **options) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == ("bearer" if where == "subprotocol" else None)
        frame = await ws.recv()
        assert isinstance(frame, bytes) and frame[:2] == b"\x00\x00"  # the server's sync step 1


async def test_token_expiring_during_a_connection_closes_it(
    auth_server: RunningServer, workspace: str
) -> None:
    await create_workspace(auth_server, workspace)
    short = token("alice", ttl=1.5)
    async with yclient(auth_server.doc_url(workspace) + f"?token={short}") as client_:
        await client_.ws.wait_closed()
        assert client_.ws.close_code == 4401
        assert client_.ws.close_reason == "token expired"


def test_cli_mints_a_token_the_server_accepts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server", "token", "--user", "alice", "--name", "Alice", "--role", "service"],
        cwd=ROOT,
        env={"JWT_SECRET": SECRET, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    decoded = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (decoded["sub"], decoded["name"], decoded["role"]) == ("alice", "Alice", "service")
    assert decoded["exp"] > time.time()


async def test_a_token_expired_seconds_ago_is_refused_at_the_door_and_on_rest(
    auth_server: RunningServer, workspace: str
) -> None:
    # One rule everywhere: valid until ``exp``, with no grace (a live connection closes at ``exp``).
    await create_workspace(auth_server, workspace)
    expired = raw_token({"alg": "HS256"}, claims("alice", exp=int(time.time()) - 3))
    for url in (auth_server.doc_url(workspace), f"{auth_server.ws_url}/ws"):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(f"{url}?token={expired}"):
                pass
        assert refused.value.response.status_code == 401
        assert b"token expired" in refused.value.response.body
    async with client(auth_server.http_url) as http:
        rest = await http.get(f"/workspaces/{workspace}", headers={"Authorization": f"Bearer {expired}"})
    assert rest.status_code == 401
    assert rest.json()["error"]["message"] == "token expired"


async def test_no_token_or_secret_reaches_the_debug_log(tmp_path: Path, workspace: str) -> None:
    server = await start_process(
        {"JWT_SECRET": SECRET, "LOG_LEVEL": "DEBUG", "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"},
        tmp_path / "server.log",
    )
    good, bad = token("alice"), raw_token({"alg": "HS256"}, claims(), key="wrong-secret-" * 4)
    expired = raw_token({"alg": "HS256"}, claims("alice", exp=int(time.time()) - 60))
    try:
        await create_workspace(server, workspace)  # type: ignore[arg-type]
        async with client(server.http_url) as http:
            await http.get("/workspaces", headers={"Authorization": f"Bearer {good}"})
            await http.get(f"/workspaces?token={good}")
            await http.get("/workspaces", headers={"Authorization": f"Bearer {bad}"})
        ways: list[tuple[str, dict[str, object]]] = [
            (f"?token={good}", {}),
            ("", {"additional_headers": {"Authorization": f"Bearer {good}"}}),
            ("", {"subprotocols": ["bearer", good]}),
            ("", {"subprotocols": [good]}),
        ]
        for url in (server.doc_url(workspace), f"{server.ws_url}/ws", f"{server.ws_url}/ws/agents"):
            for query, options in ways:
                async with websockets.connect(url + query, **options) as ws:  # type: ignore[arg-type]
                    await ws.recv()
        refusals = [(f"?token={bad}", {}), ("", {"subprotocols": ["bearer", expired]})]
        for query, options in refusals:
            with pytest.raises(InvalidStatus):
                async with websockets.connect(server.doc_url(workspace) + query, **options):  # type: ignore[arg-type]
                    pass
    finally:
        await server.stop()
    log = server.log()
    assert "DEBUG" in log and "authorization: [redacted]" in log.lower()
    for secret in (good, bad, expired, SECRET):
        assert secret not in log
        assert secret.rsplit(".", 1)[-1] not in log  # not even the signature
    # Each refusal is one INFO line with its reason, and nothing is logged as an error.
    assert log.count("refused WebSocket") == len(refusals)
    assert "invalid token signature" in log and "token expired" in log
    assert " ERROR " not in log and "Traceback" not in log
