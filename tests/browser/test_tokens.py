"""On a server with JWT_SECRET the demo signs in with a token only: a name alone is not offered,
a refused token is said so, a link to an unknown workspace creates it for its owner, and a viewer
watches without being offered to edit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import expect

from server.config import Settings
from tests.support.auth import SECRET, client, token

from .conftest import DemoServer, Pages
from .demo import expect_text, type_at_end, wait_live


@pytest.fixture
async def token_server(make_settings: Callable[..., Settings]) -> AsyncIterator[DemoServer]:
    server = DemoServer(make_settings(jwt_secret=SECRET))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_token_sign_in_and_a_link_to_a_new_workspace(
    token_server: DemoServer, pages: Pages, artifacts: Path, workspace: str
) -> None:
    # A wrong token is refused by the REST check at sign-in (a 401 the browser logs).
    pages.expect_console_error(r"status of 401")
    page = await pages.open("frank", f"{token_server.url}/demo?workspace={workspace}&doc=plan.md")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#name-form")).to_be_hidden()
    await expect(page.locator("#signin-mode")).to_contain_text("requires tokens")

    forged = token("frank", name="Frank").rsplit(".", 1)[0] + ".AAAA"
    await page.locator("#signin-token").fill(forged)
    await page.locator("#token-form button").click()
    await expect(page.locator("#signin-message")).to_contain_text("refused")

    await page.locator("#signin-token").fill(token("frank", name="Frank"))
    await page.locator("#token-form button").click()
    await wait_live(page)
    await expect(page.locator("#me-name")).to_have_value("Frank")
    await expect(page.locator("#me-name")).to_have_attribute("readonly", "")
    await expect(page.locator("#workspace-title")).to_have_text(workspace)
    await expect(page.locator("#workspace-list")).to_contain_text("owner")
    await expect(page.locator("#doc-select")).to_have_value("plan.md")
    await type_at_end(page, "Signed and stored")

    # The owner's demo agent is attached to the workspace: the monitor follows it to the end.
    await page.locator("#run-agent").click()
    agent = page.locator("#agents .agent")
    await expect(agent.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    await expect(agent).to_have_attribute("data-status", "completed")

    # A viewer, with a token of their own, sees the same document live and is offered no editing.
    async with client(token_server.url, "frank", name="Frank") as frank:
        added = await frank.put(f"/workspaces/{workspace}/members/grace", json={"role": "viewer"})
        assert added.status_code == 200, added.text
    other = await pages.open("grace", f"{token_server.url}/demo")
    await other.locator("#signin-token").fill(token("grace", name="Grace"))
    await other.locator("#token-form button").click()
    await other.locator("#open-id").fill(f"{token_server.url}/demo?workspace={workspace}&doc=plan.md")
    await other.locator("#open-form button").click()
    await wait_live(other)
    await expect_text(other, "Signed and stored")
    await expect(other.locator("#presence .peer-name")).to_have_text(["Grace", "Frank"])
    await expect(other.locator(".cm-content")).to_have_attribute("contenteditable", "false")
    await expect(other.locator("#document-message")).to_contain_text("viewer")
    await expect(other.locator("#run-agent")).to_be_disabled()
    await type_at_end(page, ", and seen")
    await expect_text(other, "Signed and stored, and seen")
    await page.screenshot(path=artifacts / "token-owner.png")
