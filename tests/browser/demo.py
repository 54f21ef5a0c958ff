"""What a person does on the demo page, as Playwright steps."""

from __future__ import annotations

import base64
import json

import httpx
from playwright.async_api import Locator, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

# The editor's text as a person reads it: remote cursors are widgets inside the lines, so they
# (and the zero-width joiners around them) are left out.
EDITOR_TEXT = r"""() => Array.from(document.querySelectorAll('.cm-content .cm-line'), (line) => {
  const copy = line.cloneNode(true)
  copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer').forEach((widget) => widget.remove())
  return copy.textContent.replace(/\u2060/g, '')
}).join('\n')"""


async def sign_in(page: Page, name: str) -> None:
    await page.locator("#signin-name").fill(name)
    await page.locator("#name-form button").click()
    await expect(page.locator("#me-name")).to_have_value(name)


async def create_workspace(page: Page, name: str) -> str:
    """Create a workspace from the side panel; returns its share link once the editor is live."""
    await page.locator("#create-name").fill(name)
    await page.locator("#create-form button").click()
    await expect(page.locator("#workspace-title")).to_have_text(name)
    await wait_live(page)
    return await page.locator("#share-link").input_value()


async def wait_live(page: Page) -> None:
    """The document is connected and synced, and so is the event channel."""
    await expect(page.locator("#doc-status")).to_have_attribute("data-state", "synced")
    await expect(page.locator("#events-status")).to_have_attribute("data-state", "live")


async def type_at_end(page: Page, text: str) -> None:
    await page.locator(".cm-content").click()
    await page.keyboard.press("Control+End")
    await page.keyboard.type(text)


async def expect_text(page: Page, expected: str, timeout: float = 20_000) -> None:
    """Wait until the editor shows exactly ``expected``."""
    try:
        await page.wait_for_function(
            f"(expected) => ({EDITOR_TEXT})() === expected", arg=expected, timeout=timeout
        )
    except PlaywrightTimeout:
        actual = await page.evaluate(EDITOR_TEXT)
        raise AssertionError(f"the editor shows {actual!r}, not {expected!r}") from None


def presence(page: Page) -> Locator:
    return page.locator("#presence .peer")


def development_token(user: str, **claims: object) -> str:
    """An unsigned token, as a development server (no JWT_SECRET) reads them: claims unverified."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': user, **claims})}."


async def report(base: str, agent_id: str, message_type: str, **data: object) -> None:
    """An agent service's report over REST, as one service identity throughout."""
    headers = {"Authorization": f"Bearer {development_token('indexer', role='service')}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as client:
        response = await client.post(f"/agents/{agent_id}/events", json={"type": message_type, "data": data})
        assert response.status_code == 202, response.text
