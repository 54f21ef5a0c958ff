"""The demo the server serves is the one its sources build: ``web_demo/dist`` is rebuilt into a
temporary folder with the committed lock file's esbuild and compared byte for byte. And the
server serves it at ``/demo`` (and ``/demo/``), scripts and styles included, without Node."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.support.server import RunningServer

DEMO = Path(__file__).resolve().parents[2] / "web_demo"


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_committed_build_is_what_the_sources_build(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to rebuild the demo"
    assert (DEMO / "node_modules" / "esbuild").is_dir(), (
        "web_demo's packages are not installed: make install-test (npm ci in web_demo)"
    )
    out = tmp_path / "dist"
    subprocess.run([node, "build.mjs", str(out)], cwd=DEMO, check=True, timeout=300)
    built, committed = files(out), files(DEMO / "dist")
    assert sorted(committed) == sorted(built), "web_demo/dist does not hold what the build makes: make demo"
    stale = sorted(name for name in built if built[name] != committed[name])
    assert stale == [], f"web_demo/dist is stale ({', '.join(stale)}): run make demo and commit web_demo/dist"


async def test_server_serves_the_demo_at_slash_demo(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        page = await client.get("/demo", params={"workspace": "ws-789", "doc": "notes.md"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == (DEMO / "dist" / "index.html").read_bytes()
        assert (await client.get("/demo/")).content == page.content

        assets = re.findall(r'(?:src|href)="/demo/([^"]+)"', page.text)
        assert sorted(assets) == ["demo.css", "demo.js"]
        for asset in assets:
            response = await client.get(f"/demo/{asset}")
            assert response.status_code == 200
            assert response.content == (DEMO / "dist" / asset).read_bytes()
        assert (await client.get("/demo/demo.js")).headers["content-type"].startswith("text/javascript")

        missing = await client.get("/demo/missing.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
