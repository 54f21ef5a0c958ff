"""``crdt_store.documents.Batches``: requests for keys gathered into batches, up to a number at once."""

from __future__ import annotations

import asyncio

import pytest

from crdt_store.documents import Batches


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_key_asked_for_as_every_batch_under_way_ends_gets_a_batch(concurrency: int) -> None:
    """Every batch under way finishes in one turn of the loop (their reads answered together), and
    in that same turn, before the batches' tasks are let go, a key is asked for: it gets a batch
    of its own, not a wait for some later request to start one."""
    loop = asyncio.get_running_loop()
    answered = loop.create_future()  # the database answers every batch at once

    async def handle(keys: list[str]) -> dict[str, str | Exception]:
        await answered
        return {key: f"row of {key}" for key in keys}

    batches: Batches[str, str] = Batches(handle, size=500, concurrency=concurrency, name="test")
    callers = []
    for n in range(concurrency):  # one batch each: asked for on different turns
        callers.append(asyncio.ensure_future(batches.get(f"k{n}")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert len(batches.tasks) == concurrency

    async def late() -> tuple[str, bool]:
        await answered  # woken in the same turn as the batches, after them
        return await batches.get("late")

    asked_late = asyncio.ensure_future(late())
    await asyncio.sleep(0)
    answered.set_result(None)
    assert [result for result, _ in await asyncio.gather(*callers)] == [
        f"row of k{n}" for n in range(concurrency)
    ]
    assert await asyncio.wait_for(asked_late, 5) == ("row of late", True)
    assert not batches.tasks
