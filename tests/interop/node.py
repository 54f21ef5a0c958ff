"""Running the Node Yjs client (``js/client.mjs``) from the tests."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).with_name("js")


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "y-websocket").is_dir():
        pytest.fail("Node.js and `npm ci` in tests/interop/js are required (make test installs them)")
    return node


class NodeClient:
    """One ``node client.mjs`` process; ``result()`` waits for its JSON report."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def result(self, timeout: float = 30) -> dict[str, Any]:
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), timeout)
        if self.process.returncode != 0:
            raise AssertionError(f"node client failed ({self.process.returncode}): {stderr.decode()}")
        return json.loads(stdout.decode().strip().splitlines()[-1])


async def start_node_client(**options: Any) -> NodeClient:
    process = await asyncio.create_subprocess_exec(
        node_binary(),
        str(JS_DIR / "client.mjs"),
        json.dumps(options),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeClient(process)
