"""Document sync between real pycrdt clients over real WebSockets."""

from __future__ import annotations

import asyncio

from pycrdt import Map

from tests.support.server import RunningServer
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def test_concurrent_clients_converge(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with yclient(url) as a, yclient(url) as b, yclient(url) as c:
        clients = [a, b, c]
        for round_ in range(20):
            for index, client in enumerate(clients):
                client.text().insert(0, f"{index}:{round_};")
            await asyncio.sleep(0)
        expected_parts = {f"{i}:{r};" for i in range(3) for r in range(20)}

        def converged() -> bool:
            texts = {str(client.text()) for client in clients}
            if len(texts) != 1:
                return False
            (text,) = texts
            return all(part in text for part in expected_parts)

        await wait_until(converged, timeout=10)
        assert len(str(a.text())) == sum(len(p) for p in expected_parts)


async def test_documents_of_one_workspace_stay_apart(server: RunningServer, workspace: str) -> None:
    async with (
        yclient(server.doc_url(workspace)) as main,
        yclient(server.doc_url(workspace, "notes/a.md")) as notes,
    ):
        main.text().insert(len(main.text()), "main document")
        notes.text().insert(len(notes.text()), "notes document")
        async with (
            yclient(server.doc_url(workspace)) as main2,
            yclient(server.doc_url(workspace, "notes/a.md")) as notes2,
        ):
            await wait_until(lambda: str(main2.text()) == "main document")
            await wait_until(lambda: str(notes2.text()) == "notes document")
            assert "notes" not in str(main2.text())


async def test_late_joiner_gets_full_state_and_maps(server: RunningServer, workspace: str) -> None:
    url = server.doc_url(workspace)
    async with yclient(url) as a:
        settings = a.doc.get("settings", type=Map)
        settings["theme"] = "dark"
        a.text().insert(len(a.text()), "hello")
        await wait_until(lambda: server.services.writer.pending == 0 and server.services.rooms.rooms != {})
        async with yclient(url) as late:
            await wait_until(lambda: str(late.text()) == "hello")
            assert late.doc.get("settings", type=Map).to_py() == {"theme": "dark"}
