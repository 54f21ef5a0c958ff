"""A server restart, as a browser sees it: the editor and the event channel reconnect by
themselves, the text is kept exactly (nothing lost, nothing duplicated), and the agent monitor
catches up with what was reported while it was away."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from .conftest import DemoServer, Pages
from .demo import expect_text, report, type_at_end, wait_live


async def test_the_editor_and_the_monitor_recover_from_a_server_restart(
    demo_server: DemoServer, pages: Pages, artifacts: Path, workspace: str
) -> None:
    # While the server is down the browser logs each refused connection attempt.
    pages.expect_console_error(r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws.*' failed")
    link = f"{demo_server.url}/demo?workspace={workspace}"
    page = await pages.open("carol", link)
    await wait_live(page)
    await type_at_end(page, "Written before the restart")
    agent_id = f"indexer-{workspace}"
    await report(demo_server.url, agent_id, "agent_execution_start", task="Index", workspace_id=workspace)
    await report(demo_server.url, agent_id, "agent_execution_update", progress=30, current_step="Parsing")
    agent = page.locator(f'#agents .agent[data-agent-id="{agent_id}"]')
    await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "30")
    await expect(page.locator("#presence .peer-name")).to_contain_text([f"Agent {agent_id}"])

    await demo_server.stop()
    await expect(page.locator("#doc-status")).not_to_have_attribute("data-state", "synced")
    await expect(page.locator("#events-status")).not_to_have_attribute("data-state", "live")
    await page.screenshot(path=artifacts / "restart-offline.png")
    await demo_server.start()
    # Reported while the page may still be away: the channel's resume (or the live stream) brings it.
    await report(demo_server.url, agent_id, "agent_execution_update", progress=60, current_step="Linking")

    await wait_live(page)
    await expect_text(page, "Written before the restart")
    await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "60")
    await expect(agent.locator(".agent-step")).to_contain_text("Linking")
    await type_at_end(page, ", and after it")
    await page.screenshot(path=artifacts / "restart-reconnected.png")

    # A newcomer gets the document from the restarted server, exactly once.
    newcomer = await pages.open("newcomer", link)
    await wait_live(newcomer)
    await expect_text(newcomer, "Written before the restart, and after it")
    await expect(newcomer.locator(f'#agents .agent[data-agent-id="{agent_id}"] .bar')).to_have_attribute(
        "aria-valuenow", "60"
    )
