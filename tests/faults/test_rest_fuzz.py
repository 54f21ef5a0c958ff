"""The REST API fuzzed from its own OpenAPI schema (schemathesis): no request gets a 5xx, and every
refusal has the JSON error body. Requests carry an owner's token, and the workspace in the path
is a real one half of the time, so that the fuzzing reaches past "not found".

Counts tried: up to ``REST_EXAMPLES`` requests per operation.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from server.app import create_app
from server.config import Settings
from tests.support.auth import SECRET, token
from tests.support.threaded import ThreadedServer, server_thread

REST_EXAMPLES = 30
WORKSPACE = f"fuzz-{uuid.uuid4().hex[:8]}"
OWNER = {"Authorization": f"Bearer {token('fuzz-owner')}"}


def fuzz_settings(database: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{database}",
        jwt_secret=SECRET,
        log_level="WARNING",
        persist_interval_ms=5,
        room_unload_grace=0.0,
    )


# The schema the running server serves at /openapi.json, read from the same app before it runs.
schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("unused.db"))).openapi())


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    with server_thread(fuzz_settings(tmp_path_factory.mktemp("rest-fuzz") / "collab.db")) as server:
        yield server


@schema.parametrize()
@settings(
    max_examples=REST_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case, rest_server: ThreadedServer) -> None:
    if "workspace_id" in case.path_parameters and zlib.crc32(repr(case.path_parameters).encode()) % 2:
        case.path_parameters["workspace_id"] = WORKSPACE
        with httpx.Client(base_url=rest_server.http_url, headers=OWNER) as http:
            http.post("/workspaces", json={"id": WORKSPACE, "name": "fuzzed"})  # 201, or 409 if it exists
    if case.path == "/events":  # a stream: read its status and headers, then hang up
        check_stream(case, rest_server)
        return
    response = case.call(base_url=rest_server.http_url, headers={**OWNER, **(case.headers or {})})
    assert response.status_code < 500, f"{case.method} {case.formatted_path[:200]}: {response.text[:500]}"
    if response.status_code >= 400 and response.status_code != 405:
        request = f"{case.method} {case.formatted_path} {str(case.query)[:200]}"
        assert response.headers.get("content-type") == ["application/json"], (
            f"{request}: {response.status_code} {response.text[:200]!r}"
        )
        error = response.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


def check_stream(case: schemathesis.Case, rest_server: ThreadedServer) -> None:
    request = case.as_transport_kwargs(
        base_url=rest_server.http_url, headers={**OWNER, **(case.headers or {})}
    )
    with httpx.stream(
        request["method"],
        request["url"],
        params=request.get("params"),
        headers=request.get("headers"),
        timeout=30,
    ) as response:
        assert response.status_code < 500, f"GET /events {str(case.query)[:200]}: {response.status_code}"
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
        else:
            assert response.headers["content-type"] == "application/json"
            error = json.loads(response.read())["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
