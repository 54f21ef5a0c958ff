"""Two visitors in two browser contexts edit one document: each sees the other's text, named
cursor and presence; a shared link opens straight into the editor; the page fits a phone."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from .conftest import DemoServer, Pages
from .demo import create_workspace, expect_text, presence, sign_in, type_at_end, wait_live


async def test_two_visitors_see_each_others_text_and_named_cursors(
    demo_server: DemoServer, pages: Pages, artifacts: Path
) -> None:
    alice = await pages.open("alice", f"{demo_server.url}/demo")
    await sign_in(alice, "Alice")
    link = await create_workspace(alice, "Design notes")
    assert link.startswith(f"{demo_server.url}/demo?workspace=")

    # A visitor without a name follows the link: a generated, editable name, straight into the editor.
    bob = await pages.open("bob", link)
    await wait_live(bob)
    assert await bob.locator("#me-name").input_value() != ""
    await bob.locator("#me-name").fill("Bob")
    await bob.locator("#me-name").press("Enter")

    await type_at_end(alice, "Hello from Alice")
    await expect_text(bob, "Hello from Alice")
    await type_at_end(bob, "\nHello from Bob")
    for page in (alice, bob):
        await expect_text(page, "Hello from Alice\nHello from Bob")

    # Remote cursors carry the other's name; the presence lists show both people.
    await expect(alice.locator(".cm-ySelectionInfo")).to_have_text(["Bob"])
    await expect(bob.locator(".cm-ySelectionInfo")).to_have_text(["Alice"])
    await expect(presence(alice).locator(".peer-name")).to_have_text(["Alice", "Bob"])  # oneself first
    await expect(presence(bob).locator(".peer-name")).to_have_text(["Bob", "Alice"])
    await expect(alice.locator("#presence [data-self=true] .peer-name")).to_have_text("Alice")
    await expect(bob.locator("#presence [data-self=true] .peer-name")).to_have_text("Bob")

    # Bob joined through the link: the workspace is in his list too.
    await expect(bob.locator("#workspace-list")).to_contain_text("Design notes")
    await alice.screenshot(path=artifacts / "collaboration-alice.png")
    await bob.screenshot(path=artifacts / "collaboration-bob.png")


async def test_a_document_link_opens_that_document_on_a_phone_width_screen(
    demo_server: DemoServer, pages: Pages, artifacts: Path, workspace: str
) -> None:
    link = f"{demo_server.url}/demo?workspace={workspace}&doc=notes%2Ftodo.md"
    writer = await pages.open("writer", link)
    await wait_live(writer)
    await type_at_end(writer, "- buy milk")

    phone = await pages.open(
        "phone", link, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    await wait_live(phone)
    await expect_text(phone, "- buy milk")
    await expect(phone.locator("#doc-select")).to_have_value("notes/todo.md")
    await expect(phone.locator("#share-link")).to_have_value(link)

    # One column: the editor fits the screen and the side panel comes below it, not beside it.
    editor = await phone.locator("#editor").bounding_box()
    side = await phone.locator(".side").bounding_box()
    assert editor is not None and side is not None
    assert editor["x"] >= 0 and editor["x"] + editor["width"] <= 390
    assert side["y"] >= editor["y"] + editor["height"]
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px wide)"
    await phone.screenshot(path=artifacts / "phone.png", full_page=True)


async def test_a_second_window_of_the_same_browser_is_a_second_person(
    demo_server: DemoServer, pages: Pages
) -> None:
    first = await pages.open("first", f"{demo_server.url}/demo")
    await sign_in(first, "Alice")
    link = await create_workspace(first, "Two windows")
    second = await first.context.new_page()
    pages.adopt("second", second)
    await second.goto(link)
    await wait_live(second)
    name = await second.locator("#me-name").input_value()
    assert name not in ("", "Alice")
    await type_at_end(second, "typed in the second window")
    await expect_text(first, "typed in the second window")
    await expect(first.locator(".cm-ySelectionInfo")).to_have_text([name])
    await expect(presence(first).locator(".peer-name")).to_have_text(["Alice", name])

    # A reload keeps each window's name.
    await second.reload()
    await wait_live(second)
    await expect(second.locator("#me-name")).to_have_value(name)
