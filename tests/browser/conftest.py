"""The demo in a real browser: Debian's chromium (``/usr/bin/chromium``, or ``CHROMIUM_PATH``)
driven by Playwright, against the real server on a local port.

Playwright's own browser downloads are never used: ``.ci/run`` installs Debian's ``chromium``.
Each test's pages report console errors and uncaught exceptions, which fail the test; the
screenshots go to ``tests/browser/artifacts/`` (or ``BROWSER_ARTIFACTS``), and a failing test
leaves one of each open page there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from server.__main__ import uvicorn_config
from server.app import create_app
from server.config import Settings
from tests.support.server import free_port
from tests.support.wait import wait_until

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", Path(__file__).parent / "artifacts"))

# Generous, for a loaded two-core machine: these are deadlines, not delays.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium; "
            ".ci/run installs it), or CHROMIUM_PATH naming another build"
        )
    return CHROMIUM


@pytest.fixture(scope="package")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """One browser for the browser tests, closed once they are done (not kept for the rest of
    the run)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


class DemoServer:
    """The service on a fixed local port, which can be stopped and started again on the same
    port and database (a restart, as a browser sees it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        config = uvicorn_config(
            create_app(self.settings), self.settings, host="127.0.0.1", port=self.port, log_level="warning"
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        await wait_until(lambda: server.started or task.done(), timeout=30)
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        self._server, self._task = server, task

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=30)
        self._server = self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def demo_server(make_settings: Callable[..., Settings]) -> AsyncIterator[DemoServer]:
    """A development server (no JWT_SECRET), as ``make run`` starts it. Agents leave the
    presence list half a second after they complete."""
    server = DemoServer(make_settings(agent_presence_linger=0.5))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Pages:
    """Pages opened by one test, each in its own browser context (a separate visitor), with
    everything they reported to the console."""

    browser: Browser
    problems: list[str] = field(default_factory=list)
    pages: dict[str, Page] = field(default_factory=dict)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    async def open(self, name: str, url: str, **context_options: Any) -> Page:
        options: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}, **context_options}
        context = await self.browser.new_context(**options)
        page = await context.new_page()
        self.adopt(name, page)
        await page.goto(url)
        return page

    def adopt(self, name: str, page: Page) -> None:
        """Watch (and close at the end) a page the test opened itself."""
        page.on("console", lambda message: self._console(name, message))
        page.on("pageerror", lambda error: self.problems.append(f"{name}: uncaught {error}"))
        self.pages[name] = page

    def expect_console_error(self, pattern: str) -> None:
        """A console error that this test causes on purpose (a refused connection while the
        server is down) and that does not count against it."""
        self.expected.append(re.compile(pattern))

    def _console(self, name: str, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.expected):
            self.problems.append(f"{name}: console error: {message.text}")

    async def close(self, artifacts: Path, failed_test: str | None) -> None:
        for name, page in self.pages.items():
            if failed_test is not None:
                with contextlib.suppress(Exception):
                    await page.screenshot(path=artifacts / f"FAILED-{failed_test}-{name}.png")
            await page.context.close()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[Any]:
    """Remember a failed test, so that its pages are photographed before they close."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
async def pages(browser: Browser, artifacts: Path, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    yield opened
    failed = request.node.stash.get(FAILED, False)
    await opened.close(artifacts, request.node.name if failed else None)
    assert opened.problems == [], "the pages reported errors:\n" + "\n".join(opened.problems)
