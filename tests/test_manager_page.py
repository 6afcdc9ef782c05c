"""The manager's page in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright's Python API; no browser download): log in with a token, a recorded call is
played by the fake PBX and the pop with the client's name appears; a caller ID name that
is markup renders as those characters; click-to-call sends an Originate the fake AMI
server sees. Skipped when no Chromium (or no Playwright) is installed."""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from fakeami import load_recording
from webfixture import running_api

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
XSS = "<img src=x onerror=alert(1)>"


def chromium() -> str:
    path = os.environ.get("CALLROUTER_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium installed (apt-get install chromium chromium-driver; .ci/run does)")
    return path


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"


async def test_pop_callbacks_and_click_to_call_in_the_browser(sqlite_url: str) -> None:
    executable = chromium()
    playwright = pytest.importorskip("playwright.async_api", reason="playwright not installed (pip install playwright)")
    async with running_api(sqlite_url) as api, playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            response = await page.goto(api.url + "/manager")
            assert response is not None and response.status == 200
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp

            await page.fill("#token", api.tokens["ann"])
            await page.click("#login")
            expect = playwright.expect  # locator checks: the page's CSP forbids evaluating strings
            await expect(page.locator("#live")).to_have_text("live", timeout=15000)
            assert "ann" in await page.text_content("#who")

            # a call from c-ann's number rings 101 (ann)
            for raw in load_recording(RECORDINGS / "answered_owner.ami.jsonl"):
                api.ami.emit(raw)
            await expect(page.locator("#pop-client-name")).to_have_text("Анна Клиентова", timeout=15000)
            assert await page.text_content("#pop-caller-number") == "+79161234567"
            # seeded history: c-ann's earlier call is on the card
            assert "answered" in await page.text_content("#pop-history")

            # a caller ID name that is markup: shown as text, nothing runs, no element made
            for raw in load_recording(RECORDINGS / "caller_abandons.ami.jsonl"):
                api.ami.emit(raw.replace("CallerIDName: 79161234567", f"CallerIDName: {XSS}"))
            await expect(page.locator("#pop-caller-name")).to_have_text(XSS, timeout=15000)
            assert await page.locator("#pop img").count() == 0
            assert await page.locator("img").count() == 0

            # the abandoned call opened a callback for ann: listed, with a done button
            await expect(page.locator("#callbacks-table tbody tr")).to_have_count(1, timeout=15000)
            assert "c-ann" in await page.text_content("#callbacks-table")

            # click-to-call from the pop's card
            await page.click("#pop-call")
            await expect(page.locator("#status")).to_contain_text("Calling", timeout=15000)
            sent = api.ami.originates[-1]
            assert sent["channel"] == "PJSIP/101" and sent["exten"] == "+79161234567"

            # done from the page (a session POST: the page sends its CSRF token)
            await page.click("#callbacks-table .cb-done")
            await expect(page.locator("#callbacks-table tbody tr")).to_have_count(0, timeout=15000)
            assert await api.daemon.store.list_callbacks(status="open") == []
            assert dialogs == [] and errors == []
        finally:
            await browser.close()
