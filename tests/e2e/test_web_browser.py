"""The web demo in a real headless Chromium (Debian's ``chromium``), driven by Playwright.

Sign in, stream an answer (it must grow over several DOM updates before ``done``), watch the pending
commit count down and land, ask again in a new conversation and follow the ref to its memory and source
conversation; screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.testkit import REPO_ROOT, FakeUpstream, MemchatServer
from tests.conftest import KEY_ORG1

pytestmark = pytest.mark.usefixtures("clean_fake")

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_REPLY = "What a lovely name! Bruno sounds like a wonderful companion. How old is he?"

# Records every visible change of the newest answer: its text and its state (waiting/streaming/done).
OBSERVE_ANSWER = """() => {
  window.__answer = [];
  const record = () => {
    const answers = document.querySelectorAll('#messages .msg-assistant');
    const last = answers[answers.length - 1];
    if (!last) return;
    const entry = {text: last.querySelector('.msg-text').textContent, state: last.dataset.state};
    const prev = window.__answer[window.__answer.length - 1];
    if (!prev || prev.text !== entry.text || prev.state !== entry.state) window.__answer.push(entry);
  };
  new MutationObserver(record).observe(document.getElementById('messages'),
    {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-state']});
}"""


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(path).exists(), "Debian's chromium is required: apt-get install -y chromium (see .ci/run)"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors the page produced."""
    return []


@pytest.fixture
def page(browser: Browser, problems: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 880}, locale="en-GB", timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    yield page
    context.close()


def send(page: Page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_chat_streams_commits_and_shows_refs(server: MemchatServer, fake: FakeUpstream, page: Page,
                                             problems: list[str], namespace: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # extraction first: the conversation text it carries would match the chat rule below too
    fake.add_rule(match="memchat-extract", reply=json.dumps({"facts": [
        {"content": "The user's dog is called Bruno.", "entities": ["Bruno"], "turn": 1}]}))
    fake.add_rule(match="name is Bruno", reply=FIRST_REPLY, token_delay=0.08)
    fake.add_rule(match="my dog called", reply="Your dog is called Bruno.", token_delay=0.05)

    page.goto(server.url + "/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#key", "not-a-key")
    page.press("#key", "Enter")
    expect(page.locator("#signin-error")).to_have_text("Invalid API key.")
    assert len(problems) == 1 and "401" in problems.pop()  # Chromium logs the refused sign-in request
    page.fill("#key", KEY_ORG1)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#connection")).to_have_attribute("data-state", "open")
    expect(page.locator("#org")).to_have_text("org org1")
    assert "vai_token" not in page.evaluate("document.cookie")  # HttpOnly: the page's scripts never see the key

    page.fill("#namespace", namespace)
    page.press("#namespace", "Enter")
    expect(page.locator("#memories-ns")).to_have_text(namespace)
    page.select_option("#commit-after", "5")

    # 1. the answer streams: it grows across several DOM updates before 'done'
    page.evaluate(OBSERVE_ANSWER)
    send(page, "Hi! My dog's name is Bruno.")
    answer = page.locator("#messages .msg-assistant").last
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator(".msg-text")).to_have_text(FIRST_REPLY)
    history = page.evaluate("window.__answer")
    growing = [entry["text"] for entry in history if entry["state"] == "streaming" and entry["text"]]
    assert len(growing) >= 2, history
    assert all(len(a) < len(b) and b.startswith(a) for a, b in zip(growing, growing[1:])), growing
    assert len(growing[0]) < len(FIRST_REPLY) and history[-1] == {"text": FIRST_REPLY, "state": "done"}
    expect(answer.locator(".chip")).to_have_text("no memories used")

    # 2. the pending commit counts down, then lands: the memory list updates by itself
    expect(page.locator("#commit")).to_contain_text("memory commit in")
    memory = page.locator("#memory-list .memory")
    expect(memory).to_have_count(1, timeout=25_000)
    expect(memory.locator(".memory-content")).to_have_text("The user's dog is called Bruno.")
    expect(page.locator("#commit")).to_have_text("✓ 1 memory saved")
    first_chat_id = page.locator("#chat-id").get_attribute("title")

    # 3. a new conversation is answered with the memory, and the ref leads to its source
    page.click("#new-chat")
    expect(page.locator("#messages .msg")).to_have_count(0)
    send(page, "What is my dog called?")
    answer = page.locator("#messages .msg-assistant").last
    expect(answer).to_have_attribute("data-state", "done")
    assert page.locator("#chat-id").get_attribute("title") != first_chat_id
    expect(answer.locator(".chip")).to_have_text("1 memory used")
    ref = page.locator("#ref-list .ref")
    expect(ref).to_have_count(1)
    expect(ref.locator(".ref-content")).to_have_text("The user's dog is called Bruno.")
    ref.locator("button").click()
    expect(page.locator("#detail-memory .memory-content")).to_have_text("The user's dog is called Bruno.")
    source = page.locator("#detail-transcript .turn.source-turn")
    expect(source.locator(".turn-user")).to_have_text("Hi! My dog's name is Bruno.")
    expect(source.locator(".turn-assistant")).to_have_text(FIRST_REPLY)
    page.screenshot(path=str(ARTIFACTS / "web-demo.png"))
    assert (ARTIFACTS / "web-demo.png").stat().st_size > 20_000

    # 4. narrow screens: one column, nothing wider than the viewport
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(ARTIFACTS / "web-demo-mobile.png"))
    page.set_viewport_size({"width": 1400, "height": 880})

    # 5. delete the memory from the list; the REST API agrees it is gone
    memory.locator(".memory-delete").click()
    expect(page.locator("#memory-list .memory")).to_have_count(0)
    expect(page.locator("#memories-empty")).to_be_visible()
    listed = httpx2.get(f"{server.url}/api/v1/memory", params={"namespace": namespace},
                        headers={"Authorization": f"Bearer {KEY_ORG1}"}).json()
    assert listed["memories"] == []

    # 6. sign out: the cookie is gone and the sign-in form is back
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.context.cookies() == []
    assert problems == [], problems
