"""The agent monitor: "Run a demo agent" reports a simulated execution attached to the
workspace; every visitor's monitor follows it to 100 %, the agent is in the presence list while
it runs and leaves it after it completes, and a click on its row shows its history."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import WebSocketRoute, expect

from .conftest import DemoServer, Pages
from .demo import report, wait_live


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


async def test_monitor_replays_what_it_missed_while_its_event_channel_was_away(
    demo_server: DemoServer, pages: Pages, workspace: str
) -> None:
    """The page's event channel goes through a proxy that the test can cut and hold down; events
    reported meanwhile reach the monitor only through the channel's resume after reconnecting."""
    routes: list[WebSocketRoute] = []
    down = asyncio.Event()

    async def event_channel(route: WebSocketRoute) -> None:
        if down.is_set():
            await route.close(code=1011, reason="held down by the test")
        else:
            route.connect_to_server()
            routes.append(route)

    context = await pages.browser.new_context()
    page = await context.new_page()
    pages.adopt("hank", page)
    await page.route_web_socket(re.compile(r"/ws\?token="), event_channel)
    await page.goto(f"{demo_server.url}/demo?workspace={workspace}")
    await wait_live(page)

    agent_id = f"crawler-{workspace}"
    await report(demo_server.url, agent_id, "agent_execution_start", task="Crawl", workspace_id=workspace)
    await report(demo_server.url, agent_id, "agent_execution_update", progress=20, current_step="Fetching")
    agent = page.locator(f'#agents .agent[data-agent-id="{agent_id}"]')
    await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "20")

    down.set()
    for route in routes:
        await route.close(code=1012, reason="cut by the test")
    await expect(page.locator("#events-status")).to_have_attribute("data-state", "reconnecting")
    await report(demo_server.url, agent_id, "agent_execution_update", progress=70, current_step="Ranking")
    await report(
        demo_server.url, agent_id, "agent_execution_complete", status="completed", result="312 pages"
    )

    down.clear()
    await expect(page.locator("#events-status")).to_have_attribute("data-state", "live")
    await expect(agent).to_have_attribute("data-status", "completed")
    await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    await expect(agent.locator(".agent-step")).to_contain_text("312 pages")
    await agent.locator(".agent-head").click()
    await expect(agent.locator(".agent-history li")).to_have_count(4)
    await expect(agent.locator(".agent-history")).to_contain_text("70 % · Ranking")
