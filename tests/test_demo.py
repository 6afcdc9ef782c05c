"""`callrouter demo` as a newcomer runs it: a subprocess that seeds its store, starts the
daemon and its built-in PBX, prints the URLs and tokens; calls with their routing
decisions show up in the API within 30 s; SIGTERM stops it cleanly within 10 s."""
from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

import aiohttp

from callrouter.demo.pbx import Freshener, Scenario


def test_a_fresh_copy_of_a_recorded_call_has_new_ids_times_and_caller():
    sc = Scenario.load("answered_owner")
    fresh = Freshener(2_000_000_000.0, sc.origin, sc.caller, "79990001122")
    frames = [fresh(raw) for _, raw in sc.frames]
    text = "".join(frames)
    assert "1795370423.504" not in text and f"{fresh.prefix}.504" in text     # the linkedid, renewed
    assert sc.caller not in text and "79990001122" in text
    stamps = [float(x) for x in re.findall(r"Timestamp: ([0-9.]+)", text)]
    assert stamps and 2_000_000_000.0 <= min(stamps) and max(stamps) < 2_000_000_000.0 + 10
    again = Freshener(2_000_000_000.0, sc.origin, sc.caller, "79990001122")
    assert again.prefix != fresh.prefix                                        # a second copy: other ids


async def test_the_demo_shows_routed_calls_in_the_api_and_stops_on_sigterm(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter.cli", "demo", "--dir", str(tmp_path / "demo"), "--web-port", "0",
        "--rate", "4", "--clients", "500", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not out or "Ctrl-C" not in out[-1]:
                line = await proc.stdout.readline()
                assert line, "the demo ended early:\n" + "".join(out)
                out.append(line.decode())
        text = "".join(out)
        base = re.search(r"API\s+(http://127\.0\.0\.1:\d+)/api/calls", text).group(1)
        supervisor = re.search(r"supervisor token\s+(cr_\S+)", text).group(1)
        manager = re.search(r"manager 101 token\s+(cr_\S+)", text).group(1)
        assert f"{base}/docs" in text
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            calls: list[dict] = []
            end = time.monotonic() + 30
            while time.monotonic() < end:
                async with http.get(f"{base}/api/calls?limit=100",
                                    headers={"Authorization": f"Bearer {supervisor}"}) as r:
                    assert r.status == 200
                    calls = (await r.json())["items"]
                if len([c for c in calls if c.get("route")]) >= 5:
                    break
                await asyncio.sleep(0.5)
            routed = [c for c in calls if c.get("route")]
            assert len(routed) >= 5, f"{len(calls)} calls, {len(routed)} routed in 30 s"
            assert {c["pbx"] for c in calls} == {"demo"}
            assert len({c["call_id"] for c in calls}) == len(calls)                 # fresh ids: no call twice
            assert len({c["route"]["reason"] for c in routed}) >= 1
            one = routed[0]
            async with http.get(f"{base}/api/calls/demo/{one['call_id']}",
                                headers={"Authorization": f"Bearer {supervisor}"}) as r:
                assert r.status == 200                                               # with its decision's trace
            async with http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {manager}"}) as r:
                assert r.status == 200 and (await r.json())["extension"] == "101"
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stdout.read(), 10)
        rc = await asyncio.wait_for(proc.wait(), 10)
        assert rc == 0, rest.decode()[-2000:]
        assert "callrouter demo: stopped" in rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
