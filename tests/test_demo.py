"""`callrouter demo` as a newcomer runs it: a subprocess that seeds its store, starts the
daemon and its built-in PBX, prints the pages' login links and the tokens; within 30 s
routed calls (with their decisions' traces) are in the API and manager 101 gets pops of
their own clients on the WebSocket; SIGTERM stops it cleanly within 10 s. The printed
dashboard and manager links work in headless Chromium (skipped without one), and the demo
runs from a built wheel installed elsewhere (its rules and recordings are package data)."""
from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from callrouter.demo import seed
from callrouter.demo.pbx import Freshener, Scenario, set_variables
from callrouter.demo.run import SCENARIOS, demo_rules, plan_call
from callrouter.routing.rules import load_rules
from popsocket import PopListener

ROOT = Path(__file__).resolve().parents[1]


def test_a_fresh_copy_of_a_recorded_call_has_new_ids_times_and_caller():
    sc = Scenario.load("answered_owner")
    fresh = Freshener(2_000_000_000.0, sc.origin, sc.caller, "79990001122")
    frames = [fresh(raw) for _, raw in sc.frames]
    text = "".join(frames)
    assert "1795370423.504" not in text and f"{fresh.prefix}.504" in text     # the linkedid, renewed
    assert sc.caller not in text and "79990001122" in text
    stamps = [float(x) for x in re.findall(r"Timestamp: ([0-9.]+)", text)]
    assert stamps and 2_000_000_000.0 <= min(stamps) and max(stamps) < 2_000_000_000.0 + 10
    # the route request passes the call's linkedid, as the shipped dialplan does
    request = fresh(sc.request)
    assert f"agi_arg_1: {fresh.prefix}.504\n" in request and f"agi_uniqueid: {fresh.prefix}.505\n" in request
    assert request.endswith("\n\n") and "agi_callerid: 79990001122\n" in request
    again = Freshener(2_000_000_000.0, sc.origin, sc.caller, "79990001122")
    assert again.prefix != fresh.prefix                                        # a second copy: other ids


def test_a_copy_rings_another_manager_and_shows_what_the_router_set():
    sc = Scenario.load("blind_transfer")
    assert sc.agents == ("101", "104")                  # the extensions it dials (not the DID)
    fresh = Freshener(2_000_000_000.0, sc.origin, sc.caller, "79990001122", {"101": "107"})
    fresh.answers = {"ROUTE_DIAL": "PJSIP/107", "CLIENT_ID": "c-2001"}
    text = "".join(fresh(raw) for _, raw in sc.frames)
    original = "".join(raw for _, raw in sc.frames)
    assert re.search(r"(?<![\w.])101(?![\w.])", text) is None and "Local/107@phones-" in text
    assert "Local/104@phones-" in text                  # the transfer target stays
    # as many 107s as the recording had 101s: nothing else was taken for an extension
    assert (len(re.findall(r"(?<![\w.])107(?![\w.])", text))
            == len(re.findall(r"(?<![\w.])10[17](?![\w.])", original)))
    assert "Variable: CLIENT_ID\r\nValue: c-2001\r" in text and "Value: c-1001\r" not in text
    assert "Variable: ROUTE_DIAL\r\nValue: PJSIP/107\r" in text
    assert "Variable: ROUTE_TIMEOUT\r\nValue: 15\r" in text  # not answered here: as recorded


def test_the_variables_a_set_variable_command_sets():
    line = (r'SET VARIABLE ARRAY(ROUTE_DIAL,ROUTE_TIMEOUT,ROUTE_FALLBACK,CLIENT_ID,CLIENT_NAME,ROUTE_REASON) '
            r'"PJSIP/101&PJSIP/201,15,,c-1,OOO \"Roga\, i kopyta\" \(\[x\]\) \\,owner"')
    assert set_variables(line) == {"ROUTE_DIAL": "PJSIP/101&PJSIP/201", "ROUTE_TIMEOUT": "15",
                                   "ROUTE_FALLBACK": "", "CLIENT_ID": "c-1",
                                   "CLIENT_NAME": 'OOO "Roga, i kopyta" ([x]) \\', "ROUTE_REASON": "owner"}
    assert set_variables('SET VARIABLE CLIENT_NAME "a \\"b\\""') == {"CLIENT_NAME": 'a "b"'}
    assert set_variables("ANSWER") == {}


def test_each_recorded_call_rings_someone_the_router_would_send_it_to():
    clients = seed.clients(3000)
    by_phone = {c.phones[0].lstrip("+"): c for c in clients}
    pools = seed.caller_pools(clients)
    scenarios = {name: Scenario.load(name) for name in SCENARIOS}
    rnd = random.Random(1)
    for name, sc in scenarios.items():
        for _ in range(20):
            plan = plan_call(sc, pools, Counter(), rnd)
            assert plan is not None, name
            caller, agents = plan
            kind = seed.SCENARIO_CALLERS[name]
            client = by_phone.get(caller)
            if kind.startswith("owner:"):
                (recorded, owner), = agents.items()
                assert recorded == kind.removeprefix("owner:") and owner in seed.OWNERS
                assert owner not in set(sc.agents) - {recorded}       # not someone else in the same call
                assert client is not None and client.owner_extension == owner and not client.problem
            elif kind.startswith("tier:"):
                assert client is not None and client.owner_extension is None and not client.problem
                assert seed.tier_of(client.monthly_turnover) == kind.removeprefix("tier:") and agents == {}
            elif kind == "unknown":
                assert client is None and caller.startswith("7495")
            else:
                assert caller == sc.caller
    # a manager on a call is not rung again: the owner calls go to the others
    busy = Counter({e: 1 for e in seed.OWNERS if e != "105"})
    for _ in range(10):
        caller, agents = plan_call(scenarios["answered_owner"], pools, busy, rnd)
        assert agents == {"101": "105"} and by_phone[caller].owner_extension == "105"
    assert plan_call(scenarios["answered_owner"], pools, Counter({e: 1 for e in seed.OWNERS}), rnd) is None
    assert plan_call(scenarios["ring_group"], pools, Counter({"107": 1}), rnd) is None
    assert plan_call(scenarios["unknown_caller"], pools, Counter({"130": 3}), rnd) is not None  # a desk


def test_the_demo_rules_are_the_shipped_ones_open_round_the_clock(tmp_path):
    rules_dir = demo_rules(tmp_path)
    assert sorted(p.name for p in rules_dir.iterdir()) == ["00-calendar.yaml", "10-tiers.yaml", "20-routes.yaml"]
    for name in ("10-tiers.yaml", "20-routes.yaml"):   # copies of the checkout's, kept the same
        assert (rules_dir / name).read_bytes() == (ROOT / "rules" / name).read_bytes(), name
    rules, shipped = load_rules(rules_dir), load_rules(ROOT / "rules")
    assert [r.rule.name for r in rules.rules] == [r.rule.name for r in shipped.rules]
    assert rules.tiers == shipped.tiers
    moscow = ZoneInfo("Europe/Moscow")
    for at in (datetime(2026, 11, 22, 3, 0, tzinfo=moscow), datetime(2026, 11, 22, 23, 59, 30, tzinfo=moscow),
               datetime(2027, 1, 1, 12, 0, tzinfo=moscow)):   # a Sunday night, just before midnight, a holiday
        assert rules.is_open(at)[0] and not shipped.is_open(at)[0], at


async def start_demo(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                     python: str = sys.executable) -> tuple[asyncio.subprocess.Process, str]:
    """`callrouter demo ARGS` until it has printed its banner: (the process, the banner)."""
    proc = await asyncio.create_subprocess_exec(
        python, "-m", "callrouter.cli", "demo", "--web-port", "0", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not out or "Ctrl-C" not in out[-1]:
                line = await proc.stdout.readline()
                assert line, "the demo ended early:\n" + "".join(out)
                out.append(line.decode())
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, "".join(out)


async def stop_demo(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM: a clean exit (0, "stopped") within 10 s."""
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stdout.read(), 10)
    rc = await asyncio.wait_for(proc.wait(), 10)
    assert rc == 0, rest.decode()[-2000:]
    assert "callrouter demo: stopped" in rest.decode()


async def kill(proc: asyncio.subprocess.Process) -> None:
    """After a failure: the demo must not outlive its test."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def printed(text: str) -> tuple[str, str, str]:
    """(base URL, supervisor token, manager 101 token) from the demo's banner."""
    base = re.search(r"API\s+(http://127\.0\.0\.1:\d+)/api/calls", text).group(1)
    return (base, re.search(r"supervisor token\s+(cr_\S+)", text).group(1),
            re.search(r"manager 101 token\s+(cr_\S+)", text).group(1))


async def routed_calls(http: aiohttp.ClientSession, base: str, token: str, at_least: int,
                       until: float) -> list[dict]:
    """The demo's calls once `at_least` of them are routed (or `until` passes)."""
    calls: list[dict] = []
    while time.monotonic() < until:
        async with http.get(f"{base}/api/calls?limit=100", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            calls = (await r.json())["items"]
        if len([c for c in calls if c.get("route")]) >= at_least:
            break
        await asyncio.sleep(0.5)
    return calls


class Pops(PopListener):
    """Manager 101's WebSocket of pops, read in the background."""

    def own_client_rang(self) -> list[dict]:
        return [p for p in self.pops if p["event"] == "ringing" and p["card"] and p["route"]
                and p["card"]["owner"] == "101"]

    def went_on(self) -> list[dict]:
        """Later pops (answered, ended) of the calls that rang."""
        rang = {p["call_id"] for p in self.own_client_rang()}
        return [p for p in self.pops if p["event"] != "ringing" and p["call_id"] in rang]


async def test_the_demo_shows_routed_calls_and_pops_and_stops_on_sigterm(tmp_path):
    proc, text = await start_demo("--dir", str(tmp_path / "demo"), "--rate", "4", "--clients", "500")
    try:
        base, supervisor, manager = printed(text)
        # the pages, as login links with the demo tokens
        assert f"supervisor dashboard   {base}/dashboard?auto=1#token={supervisor}\n" in text
        assert f"manager 101's page     {base}/manager#token={manager} " in text
        assert f"{base}/docs" in text
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            # manager 101 listens for pops from the start, as the printed manager page does
            pops = Pops(await http.ws_connect(base.replace("http", "ws") + "/api/pops/ws",
                                              headers={"Authorization": f"Bearer {manager}"}))
            calls: list[dict] = []
            end = time.monotonic() + 30
            while time.monotonic() < end:
                async with http.get(f"{base}/api/calls?limit=100",
                                    headers={"Authorization": f"Bearer {supervisor}"}) as r:
                    assert r.status == 200
                    calls = (await r.json())["items"]
                if (len([c for c in calls if c.get("route")]) >= 5 and len(pops.own_client_rang()) >= 2
                        and pops.went_on() and len({c["outcome"] for c in calls}) >= 2
                        and any(p["route"]["reason"] == "owner" for p in pops.own_client_rang())):
                    break
                await asyncio.sleep(0.5)
            routed = [c for c in calls if c.get("route")]
            assert len(routed) >= 5, f"{len(calls)} calls, {len(routed)} routed in 30 s"
            assert {c["pbx"] for c in calls} == {"demo"}
            assert len({c["call_id"] for c in calls}) == len(calls)                 # fresh ids: no call twice
            assert len({c["outcome"] for c in calls}) >= 2, {c["outcome"] for c in calls}  # mixed outcomes
            one = routed[0]
            async with http.get(f"{base}/api/calls/demo/{one['call_id']}",
                                headers={"Authorization": f"Bearer {supervisor}"}) as r:
                assert r.status == 200
                detail = await r.json()
            # the decision the router logged for this call (joined by the linkedid the
            # simulated dialplan passes), with its trace
            assert [d["reason"] for d in detail["decisions"]] == [one["route"]["reason"]], detail
            assert detail["decisions"][0]["trace"], detail
            async with http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {manager}"}) as r:
                assert r.status == 200 and (await r.json())["extension"] == "101"

            # pops: 101's own, each ringing one with the caller's card (a client 101 owns) and
            # the router's decision for that very call
            rang = pops.own_client_rang()
            assert len(rang) >= 2, [(p["event"], p["card_status"] if "card_status" in p else None)
                                    for p in pops.pops]
            assert {p["extension"] for p in pops.pops} == {"101"}                   # never another's
            assert pops.went_on(), pops.pops                                       # and the call goes on
            for p in rang:
                assert p["pbx"] == "demo" and p["card"]["id"] == p["client_id"] and p["route"]["trace"]
                assert p["caller"]["number"] and p["caller"]["raw"] in p["caller"]["number"]
            assert len({p["call_id"] for p in rang}) == len(rang)
            assert any(p["route"]["reason"] == "owner" for p in rang), [p["route"] for p in rang]
        await stop_demo(proc)
    finally:
        await kill(proc)


def chromium() -> str:
    path = os.environ.get("CALLROUTER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip(f"no chromium at {path} (apt-get install chromium; .ci/run does)")
    return path


async def rows(page, table: str) -> int:
    return await page.locator(f"#{table} tbody tr").count()


async def test_the_printed_links_in_chromium(tmp_path):
    """What a newcomer does next: open the printed dashboard link (calls appear: live ones,
    then the call list and the statistics grow by themselves) and manager 101's link (a
    pop with their client's card and why the call came to them)."""
    executable = chromium()
    playwright = pytest.importorskip("playwright.async_api", reason="pip install playwright (never `playwright install`)")
    proc, text = await start_demo("--dir", str(tmp_path / "demo"), "--rate", "4", "--clients", "500")
    try:
        base, supervisor, manager = printed(text)
        dashboard = re.search(r"supervisor dashboard\s+(\S+)", text).group(1)
        manager_page = re.search(r"manager 101's page\s+(\S+)", text).group(1)
        assert dashboard == f"{base}/dashboard?auto=1#token={supervisor}"
        async with playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            try:
                expect = playwright.expect
                problems: list[str] = []
                sup = await (await browser.new_context()).new_page()
                sup.on("pageerror", lambda e: problems.append(str(e)))
                await sup.goto(dashboard)
                await sup.wait_for_selector("body[data-ready=yes]", timeout=20000)
                await expect(sup.locator("#who")).to_contain_text("(supervisor)")
                assert sup.url == f"{base}/dashboard?auto=1"                 # the token left the address bar
                assert await sup.is_checked("#auto")
                # calls in progress, from the live endpoint the page polls
                await expect(sup.locator("#live-calls tbody tr").first).to_be_visible(timeout=20000)
                # the call list and the statistics grow with no click (the page refreshes itself)
                first = (await rows(sup, "calls"), int(await sup.locator("#team b").first.text_content()))
                async with asyncio.timeout(40):
                    while True:
                        now = (await rows(sup, "calls"), int(await sup.locator("#team b").first.text_content()))
                        if now[0] > first[0] and now[1] > first[1]:
                            break
                        await asyncio.sleep(0.5)
                ids = await sup.eval_on_selector_all("#calls tbody tr", "rs => rs.map(r => r.dataset.callId)")
                assert len(ids) == len(set(ids)) and all(ids)

                mgr = await (await browser.new_context()).new_page()
                mgr.on("pageerror", lambda e: problems.append(str(e)))
                await mgr.goto(manager_page)
                await expect(mgr.locator("#live")).to_have_text("live", timeout=15000)
                assert "101" in await mgr.text_content("#who") and mgr.url == f"{base}/manager"
                await expect(mgr.locator("#pop-client-name")).not_to_be_empty(timeout=30000)
                assert await mgr.text_content("#pop-owner") == "101"
                assert (await mgr.text_content("#pop-route")) not in ("", "—")
                assert problems == []
            finally:
                await browser.close()
        await stop_demo(proc)
    finally:
        await kill(proc)


async def test_the_demo_runs_from_an_installed_wheel(tmp_path):
    """A user who pip-installs the package (not from a checkout) has the demo's rules and
    recordings: a wheel built from the sources, installed into a directory of its own and
    run from elsewhere, routes calls."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "callrouter", src / "callrouter", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    async def pip(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pip", *args,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
        assert proc.returncode == 0, out[-3000:]

    await pip("wheel", "--no-deps", "-q", str(src), "-w", str(tmp_path / "dist"))
    wheel, = (tmp_path / "dist").glob("callrouter-*.whl")
    await pip("install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel))
    site = tmp_path / "site"
    assert (site / "callrouter" / "demo" / "rules" / "20-routes.yaml").is_file()
    assert len(list((site / "callrouter" / "demo" / "scenarios").glob("*.ami.jsonl.gz"))) == len(SCENARIOS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    which = await asyncio.create_subprocess_exec(sys.executable, "-c", "import callrouter; print(callrouter.__file__)",
                                                 env=env, cwd=elsewhere, stdout=asyncio.subprocess.PIPE)
    assert (await which.communicate())[0].decode().strip() == str(site / "callrouter" / "__init__.py")
    proc, text = await start_demo("--dir", str(tmp_path / "demo"), "--rate", "4", "--clients", "300",
                                  env=env, cwd=elsewhere)
    try:
        base, supervisor, _ = printed(text)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            calls = await routed_calls(http, base, supervisor, 3, time.monotonic() + 30)
        routed = [c for c in calls if c.get("route")]
        assert len(routed) >= 3, calls
        assert {c["route"]["rule"] for c in routed} - {"after-hours"}     # its calendar is open round the clock
        await stop_demo(proc)
    finally:
        await kill(proc)
