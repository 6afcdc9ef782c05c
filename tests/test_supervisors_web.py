"""Supervisors' endpoints over real HTTP on a running Daemon (SQLite and PostgreSQL):
stats per role, CSV, deals and targets, live calls, and recordings — Range requests,
traversal attempts refused, role boundaries, the audit of every listen and download."""
from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from callrouter.records import CallRecord, Leg, Party
from callrouter.web.recordings import Refused, resolve
from webfixture import MONDAY_10, Api, running_api

DATA = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable enough
SECRET = b"outside the recordings directory" * 10


def rec(call_id: str, agent: str, recording: str | None) -> CallRecord:
    start = MONDAY_10 + timedelta(hours=1)
    return CallRecord(pbx="lab", call_id=call_id, direction="in", caller=Party(number="+79161234567"),
                      callee=Party(raw="5550100"), client_id="c-ann", started_at=start,
                      answered_at=start + timedelta(seconds=3), ended_at=start + timedelta(seconds=33),
                      ring_seconds=3.0, talk_seconds=30.0, duration_seconds=33.0, outcome="answered",
                      answered_by=agent, final_agent=agent,
                      legs=(Leg(agent=agent, device=f"PJSIP/{agent}", ring_seconds=3.0, result="answered"),),
                      recording=recording)


@pytest.fixture
async def api(store_url: str, tmp_path):
    root = tmp_path / "monitor"
    root.mkdir()
    (root / "rec1.wav").write_bytes(DATA)
    (root / "day").mkdir()
    (root / "day" / "abs.wav").write_bytes(DATA[:1000])
    outside = tmp_path / "secret.wav"
    outside.write_bytes(SECRET)
    os.symlink(outside, root / "link.wav")
    async with running_api(store_url, recordings={"dir": str(root)}, timezone="Europe/Moscow") as a:
        await a.daemon.store.save_calls([
            rec("r-rel", "101", "rec1.wav"),
            rec("r-abs", "101", str(root / "day" / "abs.wav")),
            rec("r-up", "101", "../secret.wav"),
            rec("r-absout", "101", str(outside)),
            rec("r-link", "101", "link.wav"),
            rec("r-dotdot", "101", "day/../../secret.wav"),
            rec("r-enc", "101", "%2e%2e/secret.wav"),
            rec("r-enc2", "101", "..%2Fsecret.wav"),
            rec("r-gone", "101", "gone.wav"),
            rec("r-none", "101", None),
            rec("r-bob", "102", "rec1.wav"),
        ])
        yield a


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


def url(api: Api, call_id: str, extra: str = "") -> str:
    return f"{api.url}/api/calls/lab/{call_id}/recording{extra}"


# ------------------------------------------------------------------ recordings
async def test_range_requests(api: Api, http) -> None:
    sue = api.auth("sue")
    async with http.get(url(api, "r-rel"), headers=sue) as r:
        assert r.status == 200 and await r.read() == DATA
        assert r.headers["Accept-Ranges"] == "bytes"
    for rng, status, want, content_range in (
            ("bytes=0-99", 206, DATA[:100], "bytes 0-99/10240"),
            ("bytes=5000-5099", 206, DATA[5000:5100], "bytes 5000-5099/10240"),
            ("bytes=-100", 206, DATA[-100:], "bytes 10140-10239/10240"),
            ("bytes=10000-", 206, DATA[10000:], "bytes 10000-10239/10240")):
        async with http.get(url(api, "r-rel"), headers={**sue, "Range": rng}) as r:
            assert r.status == status, rng
            assert await r.read() == want, rng
            assert r.headers["Content-Range"] == content_range
    async with http.get(url(api, "r-rel"), headers={**sue, "Range": "bytes=20000-30000"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == "bytes */10240"
    async with http.get(url(api, "r-abs"), headers=sue) as r:  # an absolute path inside the directory
        assert r.status == 200 and await r.read() == DATA[:1000]


async def test_paths_out_of_the_directory_are_refused(api: Api, http) -> None:
    sue = api.auth("sue")
    for call_id in ("r-up", "r-absout", "r-link", "r-dotdot"):
        async with http.get(url(api, call_id), headers=sue) as r:
            body = await r.read()
            assert r.status == 403, call_id
            assert SECRET[:20] not in body
            assert "not inside the recordings directory" in (await r.json())["error"]
    for call_id in ("r-enc", "r-enc2", "r-gone"):  # encoded forms are names, not ways up: not there
        async with http.get(url(api, call_id), headers=sue) as r:
            assert r.status == 404, call_id
            assert "not on disk" in (await r.json())["error"]
    async with http.get(url(api, "r-none"), headers=sue) as r:
        assert r.status == 404 and "no recording" in (await r.json())["error"]
    # the URL itself: encoded traversal in the call id names no call
    for path in ("/api/calls/lab/..%2F..%2Fsecret.wav/recording", "/api/calls/lab/%2e%2e/recording",
                 "/api/calls/..%2F../r-rel/recording"):
        async with http.get(api.url + path, headers=sue) as r:
            assert r.status == 404, path
            assert SECRET[:20] not in await r.read()


def test_resolve_is_strict(tmp_path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.wav").write_bytes(b"x")
    assert resolve(str(root), "a.wav") == str(root / "a.wav")
    for bad in ("../x", "/etc/passwd", "", ".", "a.wav\x00", str(tmp_path), str(root) + "/../r2/a.wav"):
        with pytest.raises(Refused):
            resolve(str(root), bad)
    (tmp_path / "r2").mkdir()  # a sibling whose name starts like the root's is not inside it
    with pytest.raises(Refused):
        resolve(str(root), str(tmp_path / "r2" / "a.wav"))
    with pytest.raises(Refused):
        resolve("", "a.wav")


async def test_recording_role_boundaries_and_audit(api: Api, http) -> None:
    async with http.get(url(api, "r-rel"), headers=api.auth("ann")) as r:        # ann's own call
        assert r.status == 200
    async with http.get(url(api, "r-bob"), headers=api.auth("ann")) as r:        # bob's: does not exist for ann
        assert r.status == 404
    async with http.get(url(api, "r-rel"), headers=api.auth("bob")) as r:
        assert r.status == 404
    async with http.get(url(api, "r-rel"), headers=api.auth("nix")) as r:        # a manager without extension
        assert r.status == 403
    async with http.get(url(api, "r-rel")) as r:
        assert r.status == 401
    async with http.get(url(api, "r-bob", "?download=true"),
                        headers={**api.auth("adam"), "Range": "bytes=0-9"}) as r:
        assert r.status == 206 and r.headers["Content-Disposition"] == 'attachment; filename="rec1.wav"'
    # the audit: admins only; every served listen and download, newest first; refusals wrote none
    async with http.get(api.url + "/api/recordings/access", headers=api.auth("sue")) as r:
        assert r.status == 403
    async with http.get(api.url + "/api/recordings/access", headers=api.auth("adam")) as r:
        rows = await r.json()
    assert [(x["user"], x["role"], x["call_id"], x["action"], x["range"]) for x in rows] == [
        ("adam", "admin", "r-bob", "download", "bytes=0-9"), ("ann", "manager", "r-rel", "listen", None)]
    assert all(x["remote"] == "127.0.0.1" and x["pbx"] == "lab" for x in rows)
    at = datetime.fromisoformat(rows[0]["at"])
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=5)
    async with http.get(api.url + "/api/recordings/access?call_id=r-rel&format=csv", headers=api.auth("adam")) as r:
        table = list(csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff"))))
    assert [(t["user"], t["action"]) for t in table] == [("ann", "listen")]


# ------------------------------------------------------------------ stats, deals, targets
async def test_stats_per_role_and_csv(api: Api, http) -> None:
    q = "?period=day&date=2026-11-23"
    async with http.get(api.url + "/api/stats/managers" + q, headers=api.auth("sue")) as r:
        body = await r.json()
    assert body["period"] == {"label": "2026-11-23", "since": "2026-11-22T21:00:00Z", "until": "2026-11-23T21:00:00Z",
                              "timezone": "Europe/Moscow"}
    by = {m["key"]: m for m in body["items"]}
    # seeded: one answered call each at 10:00 and 10:05; r-* calls at 11:00: ten for 101, one for 102
    assert by["101"]["inbound_answered"] == 11 and by["102"]["inbound_answered"] == 2
    assert by["101"]["talk_total_seconds"] == pytest.approx(60 + 10 * 30)
    assert body["team"]["inbound"] == 13 and body["team"]["ring_avg_seconds"] == pytest.approx((2 * 4 + 11 * 3) / 13, abs=0.001)  # rounded to ms
    async with http.get(api.url + "/api/stats/managers" + q, headers=api.auth("ann")) as r:
        mine = await r.json()
    assert [m["key"] for m in mine["items"]] == ["101"] and mine["team"]["inbound"] == 11
    async with http.get(api.url + "/api/stats/managers" + q + "&manager=102", headers=api.auth("ann")) as r:
        assert r.status == 403 and (await r.json())["field"] == "manager"
    async with http.get(api.url + "/api/stats/managers" + q + "&format=csv", headers=api.auth("sue")) as r:
        assert r.headers["Content-Type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO((await r.text()).lstrip("\ufeff"))))
    assert [(t["key"], t["inbound_answered"]) for t in table] == [("101", "11"), ("102", "2")]
    async with http.get(api.url + "/api/stats/hours" + q, headers=api.auth("sue")) as r:
        hours = (await r.json())["items"]
    assert [(h["key"], h["inbound"]) for h in hours if h["inbound"]] == [("10", 2), ("11", 11)]
    async with http.get(api.url + "/api/stats/days?period=week&date=2026-11-23", headers=api.auth("sue")) as r:
        days = (await r.json())["items"]
    assert [d["key"] for d in days][:2] == ["2026-11-23", "2026-11-24"] and days[0]["answered"] == 13
    async with http.get(api.url + "/api/stats/tiers" + q, headers=api.auth("sue")) as r:
        assert (await r.json())["items"][0]["inbound"] == 13  # no client has a tier: all under null
    async with http.get(api.url + "/api/stats/queues?since=2026-11-23T10:02:00%2B03:00&until=2026-11-24T00:00:00%2B03:00",
                        headers=api.auth("sue")) as r:
        assert [(x["key"], x["inbound"]) for x in (await r.json())["items"]] == [(None, 12)]
    async with http.get(api.url + "/api/stats/managers?since=2026-11-23T10:00:00Z", headers=api.auth("sue")) as r:
        assert r.status == 400


async def test_deals_targets_and_progress(api: Api, http) -> None:
    deals = {"items": [{"manager": "101", "day": "2026-11-23", "deals": 2}, {"manager": "102", "day": "2026-11-02",
                                                                           "deals": 1}]}
    async with http.put(api.url + "/api/deals", json=deals, headers=api.auth("ann")) as r:
        assert r.status == 403
    for _ in range(2):  # idempotent
        async with http.put(api.url + "/api/deals", json=deals, headers=api.auth("sue")) as r:
            assert r.status == 200 and await r.json() == {"written": 2}
    async with http.put(api.url + "/api/targets/2026-11/101", json={"calls": 44, "talk_minutes": 12, "deals": 4},
                        headers=api.auth("ann")) as r:
        assert r.status == 403
    async with http.put(api.url + "/api/targets/2026-11/999", json={"calls": 1}, headers=api.auth("sue")) as r:
        assert r.status == 404
    async with http.put(api.url + "/api/targets/2026-11/101", json={"calls": 44, "talk_minutes": 12, "deals": 4},
                        headers=api.auth("sue")) as r:
        t = await r.json()
    assert t["calls"] == 11 and t["calls_progress"] == pytest.approx(0.25)
    assert t["talk_minutes"] == pytest.approx(6.0) and t["talk_minutes_progress"] == pytest.approx(0.5)
    assert t["deals"] == 2 and t["deals_progress"] == pytest.approx(0.5) and t["set_by"] == "sue"
    async with http.get(api.url + "/api/targets?month=2026-11", headers=api.auth("ann")) as r:
        assert [x["manager"] for x in await r.json()] == ["101"]
    async with http.get(api.url + "/api/targets?month=2026-11", headers=api.auth("sue")) as r:
        rows = {x["manager"]: x for x in await r.json()}
    assert rows["102"]["calls_target"] is None and rows["102"]["deals"] == 1
    async with http.get(api.url + "/api/stats/managers?period=month&date=2026-11-01", headers=api.auth("sue")) as r:
        by = {m["key"]: m for m in (await r.json())["items"]}
    assert by["101"]["deals"] == 2 and by["101"]["calls_per_deal"] == pytest.approx(5.5)
    async with http.get(api.url + "/api/deals?month=2026-11&format=csv", headers=api.auth("sue")) as r:
        assert "101,2026-11-23,2" in await r.text()


async def test_not_contacted_and_not_called_back(api: Api, http) -> None:
    miss = CallRecord(pbx="lab", call_id="m1", direction="in", caller=Party(number="+79165550000"),
                      callee=Party(raw="5550100"), client_id="c-bob", started_at=MONDAY_10 + timedelta(hours=2),
                      ended_at=MONDAY_10 + timedelta(hours=2, seconds=20), ring_seconds=20, talk_seconds=0,
                      duration_seconds=20, outcome="missed",
                      legs=(Leg(agent="102", device="PJSIP/102", ring_seconds=20, result="no-answer"),))
    await api.daemon.store.save_calls([miss])
    async with http.get(api.url + "/api/stats/not-called-back?period=day&date=2026-11-23",
                        headers=api.auth("sue")) as r:
        assert [c["call_id"] for c in (await r.json())["items"]] == ["m1"]
    async with http.get(api.url + "/api/stats/not-called-back?period=day&date=2026-11-23",
                        headers=api.auth("ann")) as r:
        assert (await r.json())["items"] == []
    # bob calls the client back (outbound: no client id, found by number)
    back = CallRecord(pbx="lab", call_id="o1", direction="out", caller=Party(raw="102"),
                      callee=Party(number="+79165550000"), started_at=MONDAY_10 + timedelta(hours=3),
                      ended_at=MONDAY_10 + timedelta(hours=3, seconds=50), ring_seconds=5, talk_seconds=45,
                      duration_seconds=50, outcome="answered", final_agent="102", agent="102")
    await api.daemon.store.save_calls([back])
    async with http.get(api.url + "/api/stats/not-called-back?period=day&date=2026-11-23",
                        headers=api.auth("sue")) as r:
        assert (await r.json())["items"] == []
    async with http.get(api.url + "/api/stats/managers?period=day&date=2026-11-23&manager=102",
                        headers=api.auth("sue")) as r:
        m = (await r.json())["items"][0]
    assert (m["missed"], m["callbacks_done"], m["callbacks_open"], m["outbound"]) == (1, 1, 0, 1)
    # not contacted for 1 day: by the wall clock, the seeded calls (23 Nov 2026) are old or not
    last = MONDAY_10 + timedelta(hours=3)
    stale = datetime.now(UTC) - timedelta(days=1) > last
    async with http.get(api.url + "/api/stats/not-contacted?days=1", headers=api.auth("sue")) as r:
        got = [x["client_id"] for x in (await r.json())["items"]]
    assert got == (["c-ann", "c-bob"] if stale else [])
    async with http.get(api.url + "/api/stats/not-contacted?days=1", headers=api.auth("bob")) as r:
        assert [x["client_id"] for x in (await r.json())["items"]] == (["c-bob"] if stale else [])
    async with http.get(api.url + "/api/stats/not-contacted?days=1&owner=101", headers=api.auth("bob")) as r:
        assert r.status == 403


async def test_live_and_dashboard_shell(api: Api, http) -> None:
    async with http.get(api.url + "/api/live", headers=api.auth("sue")) as r:
        live = await r.json()
    assert live["pbx"] == {"lab": True} and live["calls"] == []
    assert [m["extension"] for m in live["managers"]] == ["101", "102"]
    async with http.get(api.url + "/api/live", headers=api.auth("ann")) as r:
        assert r.status == 403
    async with http.get(api.url + "/dashboard") as r:
        assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
        assert '<script src="/dashboard/dashboard.js"' in await r.text()
    async with http.get(api.url + "/dashboard/uPlot.iife.min.js") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    for name in ("docs.html", "..%2F__init__.py", "uPlot.LICENSE"):
        async with http.get(api.url + "/dashboard/" + name) as r:
            assert r.status == 404, name
