"""The supervisor dashboard in headless Chromium (Playwright driving Debian's
/usr/bin/chromium; skipped when there is none): a supervisor logs in with a token, the
charts are drawn (canvas pixels), the call list filters, a recording plays (a real WAV
made here; the player reports its duration) and that listen is in the audit."""
from __future__ import annotations

import asyncio
import math
import os
import shutil
import struct
import wave
from datetime import timedelta

import pytest

from callrouter.records import CallRecord, Leg, Party
from webfixture import MONDAY_10, running_api

CHROMIUM = os.environ.get("CALLROUTER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api", reason="pip install playwright (never `playwright install`)")

SECONDS = 1.5


def tone(path, seconds: float = SECONDS, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))


def call(call_id: str, agent: str | None, outcome: str, minutes: int, recording: str | None = None) -> CallRecord:
    start = MONDAY_10 + timedelta(minutes=minutes)
    ans = outcome == "answered"
    return CallRecord(pbx="lab", call_id=call_id, direction="in", caller=Party(number="+79160000001"),
                      callee=Party(raw="5550100"), started_at=start,
                      answered_at=start + timedelta(seconds=5) if ans else None, ended_at=start + timedelta(seconds=65),
                      ring_seconds=5.0 if ans else 65.0, talk_seconds=60.0 if ans else 0.0, duration_seconds=65.0,
                      outcome=outcome, answered_by=agent if ans else None, final_agent=agent if ans else None,
                      legs=(Leg(agent="101", device="PJSIP/101", ring_seconds=5.0,
                                result="answered" if ans else "no-answer"),), recording=recording)


async def until(page, js: str, timeout: float = 20.0) -> None:
    """Poll `js` (an expression) until truthy. Not page.wait_for_function: that evaluates
    a string, which the dashboard's CSP (no 'unsafe-eval') rightly refuses."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await page.evaluate(js):
        if loop.time() > end:
            raise AssertionError(f"not true within {timeout} s: {js}")
        await asyncio.sleep(0.05)


@pytest.fixture
def store_url(tmp_path) -> str:  # one backend is enough for the browser: SQLite
    return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"


async def test_supervisor_dashboard_in_chromium(store_url: str, tmp_path) -> None:
    root = tmp_path / "monitor"
    root.mkdir()
    tone(root / "tone.wav")
    async with running_api(store_url, recordings={"dir": str(root)}, timezone="Europe/Moscow") as api:
        await api.daemon.store.save_calls([
            call("b-rec", "101", "answered", 30, "tone.wav"), call("b-miss1", None, "missed", 40),
            call("b-miss2", None, "missed", 50), call("b-ans", "101", "answered", 20)])
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
            try:
                page = await browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                await page.goto(api.url + "/dashboard")
                await page.fill("#token", api.tokens["sue"])
                await page.click("#login button[type=submit]")
                await page.wait_for_selector("body[data-ready=yes]")
                await page.fill("#date", "2026-11-23")
                await page.select_option("#period", "day")
                await until(page, "document.getElementById('period-label').textContent"
                                             ".startsWith('2026-11-23')")
                await page.wait_for_selector("body[data-ready=yes]")
                assert await page.text_content("#who") == "sue (supervisor)"

                # the charts: uPlot canvases with drawn (non-transparent) pixels
                for chart in ("#chart-hours", "#chart-days"):
                    drawn = await page.eval_on_selector(chart + " canvas", """c => {
                        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
                    assert drawn > 100, chart
                rows = await page.eval_on_selector_all("#managers tbody tr", "rs => rs.map(r => r.cells[0].textContent)")
                assert rows == ["101", "102"]
                assert await page.text_content("#period-label") == "2026-11-23 (Europe/Moscow)"
                # presence from the live endpoint
                await until(page, "document.querySelectorAll('#presence tbody tr').length == 2")

                # filter the call list
                all_ids = await page.eval_on_selector_all("#calls tbody tr", "rs => rs.map(r => r.dataset.callId)")
                assert {"b-rec", "b-miss1", "b-miss2", "b-ans"} <= set(all_ids)
                await page.select_option("#f-outcome", "missed")
                await page.click("#call-filter button[type=submit]")
                await until(page, "[...document.querySelectorAll('#calls tbody tr')].map(r => r.cells[5].textContent)"
                                  ".join() == 'missed,missed'")
                missed = await page.eval_on_selector_all("#calls tbody tr", "rs => rs.map(r => r.dataset.callId)")
                assert sorted(missed) == ["b-miss1", "b-miss2"]
                assert sorted(await page.eval_on_selector_all(
                    "#not-called-back tbody tr", "rs => rs.map(r => r.cells[3].textContent)")) == ["missed", "missed"]

                # play the recording
                await page.select_option("#f-outcome", "")
                await page.click("#call-filter button[type=submit]")
                await page.wait_for_selector("#calls tr[data-call-id=b-rec] button.play")
                await page.click("#calls tr[data-call-id=b-rec] button.play")
                await until(page, "isFinite(document.getElementById('player').duration) "
                                             "&& document.getElementById('player').duration > 0")
                duration = await page.eval_on_selector("#player", "a => a.duration")
                assert duration == pytest.approx(SECONDS, abs=0.05)
                assert not [m for m in problems if "Content Security Policy" in m or "Refused" in m], problems
            finally:
                await browser.close()
        audit = await api.daemon.store.engine.connect()
        try:
            from sqlalchemy import text
            who = (await audit.execute(text("SELECT user_name, call_id, action FROM recording_access"))).all()
        finally:
            await audit.close()
        assert ("sue", "b-rec", "listen") in [tuple(r) for r in who]
