"""The agent monitor: "Run a demo agent" reports a simulated execution attached to the
workspace; every visitor's monitor follows it to 100 %, the agent is in the presence list while
it runs and leaves it after it completes, and a click on its row shows its history."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from .conftest import DemoServer, Pages
from .demo import wait_live


async def test_demo_agent_reaches_100_percent_then_leaves_the_presence_list(
    demo_server: DemoServer, pages: Pages, artifacts: Path, workspace: str
) -> None:
    link = f"{demo_server.url}/demo?workspace={workspace}"
    runner = await pages.open("runner", link)
    watcher = await pages.open("watcher", link)
    for page in (runner, watcher):
        await wait_live(page)

    await runner.locator("#run-agent").click()
    row = watcher.locator("#agents .agent")
    await expect(row).to_have_count(1)
    agent_id = await row.get_attribute("data-agent-id")
    assert agent_id is not None and agent_id.startswith("demo-agent-")
    shown = f'#presence [data-kind=agent][data-agent-id="{agent_id}"]'
    for page in (runner, watcher):
        await expect(page.locator(shown)).to_have_count(1)
    await watcher.screenshot(path=artifacts / "agent-running.png")

    for page in (runner, watcher):
        agent = page.locator(f'#agents .agent[data-agent-id="{agent_id}"]')
        await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "100")
        await expect(agent).to_have_attribute("data-status", "completed")
        await expect(agent.locator(".agent-step")).to_contain_text("Read 0 words")
    await watcher.screenshot(path=artifacts / "agent-completed.png")

    for page in (runner, watcher):
        await expect(page.locator("#presence [data-kind=agent]")).to_have_count(0)
        await expect(page.locator("#presence [data-kind=human]")).to_have_count(2)

    # Its history, on click: the start, every step, the completion.
    await row.locator(".agent-head").click()
    history = row.locator(".agent-history li")
    await expect(history.first).to_contain_text("started: Summarise the document")
    await expect(history.last).to_contain_text("completed: Read 0 words on 0 lines")
    await expect(history).to_have_count(8)
    await expect(row.locator(".agent-head")).to_have_attribute("aria-expanded", "true")
    await watcher.screenshot(path=artifacts / "agent-history.png")
