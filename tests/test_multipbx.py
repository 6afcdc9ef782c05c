"""One daemon, two PBXs that reuse the same ids: two fake AMI servers (tests/fakeami.py)
replay the same recorded call (same linkedid, same uniqueids) into one Daemon, and the
FastAGI route requests of each are attributed to the right PBX - by `pbx=` in the AGI URL,
by the address they come from (127.0.0.2 plays the second PBX on loopback), and an
unknown source is logged and attributed to the first PBX. The records are separate, each
joined to its own PBX's routing decision."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from agisim import agi_call, route_request
from callrouter.agi.protocol import parse_header
from callrouter.ami.events import Channel, DeviceStateChange, Hangup, Newchannel, StreamGap
from callrouter.config import AgiConfig, ManagerConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.daemon import Daemon, pbx_by_address
from callrouter.logthrottle import Throttle
from callrouter.routing.presence import Presence
from callrouter.store import Client
from callrouter.store.schema import RouteDecisionRow
from eventually import eventually
from fakeami import FakeAmi, load_recording

HERE = Path(__file__).parent
RULES = HERE.parent / "rules"
CALL = load_recording(HERE / "fixtures" / "asterisk" / "answered_owner.ami.jsonl")
LINKEDID = "1795370423.504"   # the recording's; both PBXs use it
AGI_UNIQUEID = "1795370423.505"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HOST = "127.0.0.1"
IVAN = Client(id="c-1001", name="Ivan Petrov", owner_extension="101", monthly_turnover=120_000,
              phones=("+79161234567",))


def test_the_pbx_is_read_from_the_agi_url():
    req = parse_header(["agi_network: yes", "agi_network_script: route?pbx=west",
                        "agi_request: agi://callrouter:4573/route?pbx=west", "agi_uniqueid: 1.2"])
    assert req.script == "route" and req.param("pbx") == "west" and req.param("other") == ""
    only_request = parse_header(["agi_request: agi://callrouter:4573/route?x=1&pbx=east"])
    assert only_request.param("pbx") == "east"


def test_an_address_two_pbxs_share_attributes_neither():
    pbxs = (PbxConfig(name="a", host="10.0.0.5"), PbxConfig(name="b", host="10.0.0.5"),
            PbxConfig(name="c", host="10.0.0.7", agi_sources=("10.0.0.6", "10.0.0.8")))
    assert pbx_by_address(pbxs) == {"10.0.0.6": "c", "10.0.0.8": "c"}


async def test_two_pbxs_with_the_same_linkedids_keep_their_records_and_decisions_apart(store, store_url, tmp_path,
                                                                                       caplog, monkeypatch):
    monkeypatch.setattr("callrouter.agi.server.throttled", Throttle())  # this test's log line, unsuppressed
    await store.upsert_clients([IVAN])
    async with FakeAmi([]) as east_ami, FakeAmi([]) as west_ami:
        settings = Settings(
            database_url=store_url, rules_dir=str(RULES), agi=AgiConfig(host="0.0.0.0", port=0),
            web=WebConfig(enabled=False), spool=SpoolConfig(path=str(tmp_path / "spool.db")),
            managers=(ManagerConfig(extension="101", devices=("PJSIP/101",)),),
            pbx=(PbxConfig(name="east", host=HOST, port=east_ami.port, reconnect_max=1.0),
                 PbxConfig(name="west", host=HOST, port=west_ami.port, agi_sources=("127.0.0.2",),
                           reconnect_max=1.0)))
        daemon = Daemon(settings, clock=lambda: MONDAY_10, wait_for_directory=True)
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.started.wait(), 20)
            port = daemon.agi.port
            # east: its AMI host's address; the owner's caller ID -> the owner
            east = await agi_call(HOST, port, route_request("89161234567", linkedid=LINKEDID,
                                                            uniqueid=AGI_UNIQUEID))
            # west: named in the URL (from east's address: the URL wins); an unknown caller
            west = await agi_call(HOST, port, route_request("74950000001", linkedid=LINKEDID, uniqueid=AGI_UNIQUEID,
                                                            script="route?pbx=west"))
            # west again, by its address alone (another call)
            west2 = await agi_call(HOST, port, route_request("74950000002", linkedid="9.1"), local="127.0.0.2")
            # nobody's address, no pbx=: the first PBX, and a log line saying so
            with caplog.at_level(logging.WARNING, logger="callrouter.agi.server"):
                stray = await agi_call(HOST, port, route_request("74950000003", linkedid="9.2"), local="127.0.0.3")
            assert east.variables["ROUTE_REASON"] == "owner"
            assert west.variables["ROUTE_REASON"] == west2.variables["ROUTE_REASON"] == "unknown-caller"
            assert stray.variables["ROUTE_DIAL"]
            assert daemon.agi.stats["pbx-unknown"] == 1
            assert any("127.0.0.3" in r.getMessage() and "no pbx=" in r.getMessage() for r in caplog.records)
            # now both PBXs play the same call, same ids
            for raw in CALL:
                east_ami.push(raw)
                west_ami.push(raw)

            async def both_stored() -> bool:
                got = await asyncio.gather(store.get_call("east", LINKEDID), store.get_call("west", LINKEDID))
                return all(got)
            await eventually(both_stored, 20, "both records stored")
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    east_rec, west_rec = await store.get_call("east", LINKEDID), await store.get_call("west", LINKEDID)
    assert (east_rec.pbx, west_rec.pbx) == ("east", "west")
    # each record is the whole call as its PBX played it, joined to its own PBX's decision
    for rec in (east_rec, west_rec):
        got = (rec.caller.number, rec.answered_by, rec.outcome, rec.complete)
        assert got == ("+79161234567", "101", "answered", True)
    assert east_rec.route is not None and east_rec.route.reason == "owner" and east_rec.client_id == "c-1001"
    assert west_rec.route is not None and west_rec.route.reason == "unknown-caller"
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(RouteDecisionRow.pbx, RouteDecisionRow.linkedid,
                                          RouteDecisionRow.reason))).all()
    assert sorted(tuple(r) for r in rows) == sorted([
        ("east", "9.2", "unknown-caller"), ("east", LINKEDID, "owner"),
        ("west", "9.1", "unknown-caller"), ("west", LINKEDID, "unknown-caller")])
    assert await store.count_calls() == 2
    # what GET /api/calls/{pbx}/{call_id} shows: each call with its own PBX's decision only
    for pbx, reason in (("east", "owner"), ("west", "unknown-caller")):
        _, decisions = await store.call_with_decisions(pbx, LINKEDID)
        assert [d.reason for d in decisions] == [reason]


def test_presence_keeps_two_pbxs_channels_apart():
    """Both PBXs give a channel uniqueid 1.1: a hangup on one frees only its own phone,
    and one PBX's reconnect forgets only what that PBX said."""
    p = Presence()
    p.apply(Newchannel(None, _chan("PJSIP/101-0000000a", "1.1", "Up")), source="east")
    p.apply(Newchannel(None, _chan("PJSIP/102-0000000a", "1.1", "Up")), source="west")
    p.apply(DeviceStateChange(None, "PJSIP/103", "INUSE"), source="west")
    p.apply(Hangup(None, _chan("PJSIP/101-0000000a", "1.1", "Up"), 16), source="east")
    assert p.get("101").state != "busy" and p.get("102").state == "busy"
    p.apply(StreamGap(None, "reconnect"), source="east")
    assert p.get("102").state == "busy" and p.get("103").state == "busy"
    assert "west:pjsip/103" in p.get("103").detail
    p.apply(StreamGap(None, "reconnect"), source="west")
    assert p.get("102").state == p.get("103").state == "unknown"


def _chan(name: str, uid: str, state: str) -> Channel:
    return Channel(name=name, uniqueid=uid, linkedid=uid, state=state)
