"""The dev-only chat page (make dev's /dev/chat) in headless Chromium: it lists and creates
trips, streams a reply as it is written, and stops one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.stack.apiclient import Client
from dev.stack.backboard_standin import BackboardStandIn
from dev.stack.local_api import CHAT_PATH, LocalApi
from dev.stack.token_issuer import LocalIssuer
from tests.system.test_stream import messages

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser_page() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):  # .ci/run installs it: a missing browser is a CI failure
            pytest.fail("Chromium is not installed, and CI must run the browser test")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_the_chat_page_streams_a_reply_and_stops_one(
    browser_page: object, api_env: LocalIssuer, backboard: BackboardStandIn
) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(browser_page, Page)
    page = browser_page
    token = api_env.mint("user_alice", email="alice@example.test", name="Alice")
    server = LocalApi("127.0.0.1", 0, chat_page=True).start()
    try:
        page.goto(f"{server.base_url}{CHAT_PATH}#token={token}")
        page.click("#new-trip")
        expect(page.locator("button.trip.current")).to_have_count(1)
        page.fill("#text", "Two days in Porto")
        page.click("#send-button")
        reply = page.locator(".msg.assistant").last
        expect(reply).not_to_have_class("msg assistant pending", timeout=20_000)
        expect(page.locator("#status")).to_have_text("completed")
        (trip,) = [t["id"] for t in Client(token).call("GET", "/sessions").body["sessions"]]
        stored = messages(Client(token), trip)["messages"]
        assert reply.text_content() == stored[1]["content"]

        backboard.stream_delay = 0.3
        page.fill("#text", "And Braga?")
        page.click("#send-button")
        streaming = page.locator(".msg.assistant.pending")
        expect(streaming).not_to_have_text("", timeout=20_000)
        page.click("#stop")
        expect(page.locator("#status")).to_have_text("stopped", timeout=20_000)
        stored = messages(Client(token), trip)["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[3]["content"]
        shown = page.locator(".msg.assistant").last.text_content() or ""
        assert shown.startswith(stored[3]["content"])
    finally:
        server.stop()
