"""Documents served by several instances: convergence and awareness across instances, a first
load on a second instance, an instance killed while clients write, a Redis restart."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import redis.asyncio as redis
from pycrdt import Doc, Map, Text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.exceptions import InvalidHandshake
from websockets.protocol import State

from crdt_store import DocumentRepository
from crdt_store.engine import normalise_database_url
from tests.cluster.conftest import StartCluster
from tests.interop.node import start_node_client
from tests.support.auth import client, token
from tests.support.server import ServerProcess, free_port
from tests.support.wait import wait_until
from tests.support.yclient import yclient


async def create_workspace(instance: ServerProcess, workspace: str, owner: str = "owner") -> None:
    async with client(instance.http_url, owner) as http:
        response = await http.post("/workspaces", json={"id": workspace, "name": workspace})
        assert response.status_code == 201, response.text


def url_for(instance: ServerProcess, workspace: str, user: str) -> str:
    return f"{instance.doc_url(workspace)}?token={token(user)}"


async def stored_document(pg_url: str, workspace: str) -> Doc:
    """The document as PostgreSQL alone holds it (snapshot and update rows), no server involved."""
    engine = create_async_engine(normalise_database_url(pg_url))
    try:
        stored = await DocumentRepository(engine).load(workspace, "")
    finally:
        await engine.dispose()
    doc = Doc()
    for update in stored.updates:
        doc.apply_update(update)
    return doc


async def test_python_and_js_clients_on_three_instances_converge_and_see_each_other(
    start_cluster: StartCluster, workspace: str
) -> None:
    a, b, c = await start_cluster(3)
    await create_workspace(a, workspace)
    parts = ["js-on-a;", "js-on-c;", "py-on-b;"]
    async with yclient(url_for(b, workspace, "bea")) as python_client:
        js_clients = [
            await start_node_client(
                url=f"{instance.ws_url}/ws/workspaces",
                room=workspace,
                token=token(name),
                insert=part,
                expect=parts,
                awareness={"user": {"name": name}},
                expectPeers=[peer],
                timeoutMs=30000,
            )
            for instance, name, part, peer in ((a, "ann", parts[0], "cid"), (c, "cid", parts[1], "ann"))
        ]
        python_client.text().insert(0, parts[2])
        results = [await js.result(timeout=40) for js in js_clients]
        await wait_until(lambda: all(p in str(python_client.text()) for p in parts), timeout=20)
        final = str(python_client.text())
    # The same text on every replica, whatever order the concurrent inserts were merged in.
    assert sorted(final.split(";")) == sorted(["", *(p.rstrip(";") for p in parts)])
    for result in results:
        assert result["text"] == final
    # Each JavaScript client saw the other's cursor, through another instance.
    assert "cid" in results[0]["seenPeers"]
    assert "ann" in results[1]["seenPeers"]


async def test_room_first_loaded_on_a_second_instance_gets_updates_not_stored_yet(
    start_cluster: StartCluster, workspace: str, pg_url: str
) -> None:
    # The first instance stores nothing for a minute: until then only it and Redis have the edit.
    (a,) = await start_cluster(1, PERSIST_INTERVAL_MS="60000", ROOM_UNLOAD_GRACE="600")
    await create_workspace(a, workspace)
    async with yclient(url_for(a, workspace, "ann")) as writer:
        writer.text().insert(0, "not stored yet")
        async with yclient(url_for(a, workspace, "witness")) as witness:
            await wait_until(lambda: str(witness.text()) == "not stored yet")
        assert str((await stored_document(pg_url, workspace)).get("text", type=Text)) == ""
        (b,) = await start_cluster(1)
        async with yclient(url_for(b, workspace, "bob")) as reader:
            await wait_until(lambda: str(reader.text()) == "not stored yet", timeout=10)
            reader.text().insert(len(reader.text()), " and back")
            await wait_until(lambda: str(writer.text()) == "not stored yet and back", timeout=10)


async def test_killed_instance_loses_nothing(
    start_cluster: StartCluster, workspace: str, pg_url: str
) -> None:
    # A one-second group commit: the killed instance surely holds updates it has not stored.
    instances = await start_cluster(3, PERSIST_INTERVAL_MS="1000")
    victim = instances[0]
    await create_workspace(victim, workspace)
    writes_each = 40
    writers = [f"w{i}" for i in range(6)]  # two per instance
    written = 0
    half_done = asyncio.Event()
    converge = asyncio.Event()
    docs = {name: Doc() for name in writers}
    reconnected: set[str] = set()

    async def write(index: int, name: str) -> None:
        nonlocal written
        doc = docs[name]
        entries = doc.get("entries", type=Map)
        done = 0
        # Its own instance first; when that one dies, the next live one (a load balancer's job).
        order = [instances[(index + k) % len(instances)] for k in range(len(instances))]
        for instance in order:
            if instance.process.poll() is not None:
                continue
            if instance is not order[0]:
                reconnected.add(name)
            try:
                async with yclient(url_for(instance, workspace, name), doc) as connection:
                    while done < writes_each and connection.ws.state is State.OPEN:
                        entries[f"{name}-{done}"] = done
                        done += 1
                        written += 1
                        if written >= len(writers) * writes_each // 2:
                            half_done.set()
                        await asyncio.sleep(0.02)  # pacing, so that the kill lands mid-stream
                    if done == writes_each:
                        await converge.wait()
                        return
            except (OSError, InvalidHandshake, TimeoutError):
                continue
        raise AssertionError(f"{name}: no live instance left")

    tasks = [asyncio.create_task(write(i % 3, name)) for i, name in enumerate(writers)]
    try:
        await asyncio.wait_for(half_done.wait(), timeout=30)
        await victim.kill()
        expected = {f"{name}-{i}" for name in writers for i in range(writes_each)}
        await wait_until(
            lambda: (
                all(set(doc.get("entries", type=Map).keys()) == expected for doc in docs.values())
                or any(task.done() for task in tasks)
            ),
            timeout=40,
        )
        for task in tasks:
            if task.done():
                task.result()  # raise what went wrong
    finally:
        converge.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert reconnected == {"w0", "w3"}  # the victim's clients moved to the survivors

    async def everything_stored() -> bool:
        stored = await stored_document(pg_url, workspace)
        return set(stored.get("entries", type=Map).keys()) == expected

    # Among them the updates the victim accepted and relayed but never stored: a survivor
    # stores those once the victim's heartbeat has expired.
    await wait_until(everything_stored, timeout=30, interval=0.2)


async def test_survivor_stores_what_a_killed_instance_accepted_but_had_not_stored(
    start_cluster: StartCluster, workspace: str, pg_url: str, redis_url: str
) -> None:
    (victim,) = await start_cluster(1, PERSIST_INTERVAL_MS="60000")
    (survivor,) = await start_cluster(1)
    await create_workspace(victim, workspace)
    entries = {f"entry-{i}" for i in range(20)}
    async with yclient(url_for(victim, workspace, "ann")) as writer:
        for key in sorted(entries):
            writer.doc.get("entries", type=Map)[key] = key
        async with yclient(url_for(victim, workspace, "witness")) as witness:
            await wait_until(lambda: set(witness.doc.get("entries", type=Map).keys()) == entries)
        relay = redis.Redis.from_url(redis_url)
        try:
            (stream,) = [key async for key in relay.scan_iter(match=f"{start_cluster.prefix}:doc:*:updates")]

            async def all_relayed() -> bool:
                doc = Doc()
                for _, fields in await relay.xrange(stream):
                    doc.apply_update(fields[b"u"])
                return set(doc.get("entries", type=Map).keys()) == entries

            await wait_until(all_relayed, timeout=10)
        finally:
            await relay.aclose()
        # Only the victim's memory and its Redis stream hold the entries; its client goes with it.
        assert set((await stored_document(pg_url, workspace)).get("entries", type=Map).keys()) == set()
        await victim.kill()

    async def everything_stored() -> bool:
        stored = await stored_document(pg_url, workspace)
        return set(stored.get("entries", type=Map).keys()) == entries

    await wait_until(everything_stored, timeout=30, interval=0.2)
    assert "token=ey" not in victim.log()  # tokens in URLs stay out of the logs
    # The survivor logs the takeover once it has also withdrawn the victim's users, after the store.
    took_over = re.compile(r"stopped: stored [1-9]\d* of its updates")
    await wait_until(lambda: took_over.search(survivor.log()), timeout=10)


@contextlib.asynccontextmanager
async def own_redis(port: int, log_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A Redis server of this test's own, which the test may stop and start again."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def answers() -> bool:
        probe = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        try:
            return bool(await probe.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            await probe.aclose()

    try:
        await wait_until(answers, timeout=10)
        yield process
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def test_editing_goes_on_during_a_redis_restart_and_instances_converge_after(
    start_cluster: StartCluster, workspace: str, tmp_path: Path
) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    async with own_redis(port, tmp_path / "redis.log") as redis_process:
        a, b = await start_cluster(2, redis_url=redis_url)
        await create_workspace(a, workspace)
        async with (
            yclient(url_for(a, workspace, "ann")) as on_a,
            yclient(url_for(a, workspace, "amy")) as also_on_a,
            yclient(url_for(b, workspace, "bob")) as on_b,
        ):
            on_a.text().insert(0, "before;")
            await wait_until(lambda: str(on_b.text()) == "before;", timeout=10)

            redis_process.terminate()
            await asyncio.to_thread(redis_process.wait, 10)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{a.http_url}/health/redis")).status_code == 503
            on_a.text().insert(len(on_a.text()), "during-a;")
            on_b.text().insert(0, "during-b;")
            # Collaboration on each instance goes on without Redis.
            await wait_until(lambda: "during-a;" in str(also_on_a.text()), timeout=10)
            assert "during-a;" not in str(on_b.text())

            async with own_redis(port, tmp_path / "redis.log"):
                expected = sorted(["before", "during-a", "during-b", ""])

                def converged() -> bool:
                    texts = {str(c.text()) for c in (on_a, also_on_a, on_b)}
                    return len(texts) == 1 and sorted(texts.pop().split(";")) == expected

                await wait_until(converged, timeout=30)
                async with httpx.AsyncClient() as http:
                    await wait_until(
                        lambda: _status(http, f"{b.http_url}/health/redis", 200), timeout=10, interval=0.1
                    )
                await a.stop()
                await b.stop()


async def _status(http: httpx.AsyncClient, url: str, expected: int) -> bool:
    return (await http.get(url)).status_code == expected
