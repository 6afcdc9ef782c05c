"""Presence from typed AMI events (recorded and scripted) + DND; owner busy -> tier."""
from datetime import datetime
from pathlib import Path

from callrouter.ami.capture import parse_raw_frame, read_events
from callrouter.ami.events import (Channel, DeviceStateChange, ExtensionStatus, Hangup, Newchannel, Newstate,
                                   Rename, StreamGap, parse_event)
from callrouter.config import ManagerConfig
from callrouter.devices import DeviceMap
from callrouter.routing.presence import Presence
from callrouter.routing.engine import decide
from callrouter.routing.rules import load_rules
from callrouter.routing.types import ClientInfo

FIX = Path(__file__).parent / "fixtures" / "asterisk"
RULES = load_rules(Path(__file__).resolve().parents[1] / "rules")
OPEN = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
IVAN = ClientInfo("c-1001", "Ivan Petrov", owner_extension="101", monthly_turnover=120_000)


def chan(name, uid, state="Down"):
    return Channel(name=name, uniqueid=uid, linkedid=uid, state=state)


def test_nothing_known_is_unknown_and_available():
    p = Presence()
    st = p.get("101")
    assert st.state == "unknown" and st.available


def test_device_states():
    p = Presence()
    for state, expect in [("NOT_INUSE", "idle"), ("INUSE", "busy"), ("RINGING", "busy"), ("ONHOLD", "busy"),
                          ("BUSY", "busy"), ("UNAVAILABLE", "unavailable"), ("INVALID", "unavailable"),
                          ("UNKNOWN", "unknown"), ("NOT_INUSE", "idle")]:
        p.apply(DeviceStateChange(None, "PJSIP/101", state))
        assert p.get("101").state == expect, state
    assert p.get("101").available


def test_configured_devices_map_to_their_manager():
    dm = DeviceMap((ManagerConfig(extension="201", devices=("PJSIP/anna-desk", "PJSIP/anna-soft")),))
    p = Presence(dm)
    p.apply(DeviceStateChange(None, "PJSIP/anna-desk", "UNAVAILABLE"))
    assert p.get("201").state == "unavailable"
    # one device reachable is enough to be reachable; one in use is enough to be busy
    p.apply(DeviceStateChange(None, "PJSIP/anna-soft", "NOT_INUSE"))
    assert p.get("201").state == "idle"
    p.apply(DeviceStateChange(None, "PJSIP/anna-soft", "INUSE"))
    assert p.get("201").state == "busy"
    # unrelated devices do not leak into extensions
    p.apply(DeviceStateChange(None, "Queue:support_avail", "INUSE"))
    p.apply(DeviceStateChange(None, "Custom:night", "INUSE"))
    assert set(p.snapshot()) == {"201"}


def test_extension_status_hint_bits_and_last_report_wins():
    p = Presence()
    p.apply(ExtensionStatus(None, "101", "phones", 0))
    assert p.get("101").state == "idle"
    p.apply(ExtensionStatus(None, "101", "phones", 9, "InUse&Ringing"))
    assert p.get("101").state == "busy" and "InUse&Ringing" in p.get("101").detail
    p.apply(ExtensionStatus(None, "101", "phones", 4, "Unavailable"))
    assert p.get("101").state == "unavailable"
    p.apply(DeviceStateChange(None, "PJSIP/101", "NOT_INUSE"))  # newer than the hint
    assert p.get("101").state == "idle"
    p.apply(ExtensionStatus(None, "101", "phones", -1))
    assert p.get("101").state == "unknown"


def test_a_live_channel_makes_the_phone_busy_whatever_the_device_says():
    p = Presence()
    p.apply(DeviceStateChange(None, "PJSIP/101", "NOT_INUSE"))
    p.apply(Newchannel(None, chan("PJSIP/101-0000000a", "1.1", "Down")))
    assert p.get("101").state == "idle"  # created, not yet ringing
    p.apply(Newstate(None, chan("PJSIP/101-0000000a", "1.1", "Ringing")))
    assert p.get("101").state == "busy" and "PJSIP/101-0000000a Ringing" in p.get("101").detail
    p.apply(Newstate(None, chan("PJSIP/101-0000000a", "1.1", "Up")))
    assert p.get("101").state == "busy"
    p.apply(Hangup(None, chan("PJSIP/101-0000000a", "1.1", "Up"), 16))
    assert p.get("101").state == "idle"


def test_rename_moves_the_channel():
    p = Presence()
    p.apply(Newstate(None, chan("PJSIP/101-0000000a", "1.1", "Up")))
    p.apply(Rename(None, "1.1", "PJSIP/101-0000000a", "PJSIP/102-0000000b"))
    assert p.get("101").state == "unknown" and p.get("102").state == "busy"


def test_a_stream_gap_forgets_what_events_said_but_not_dnd():
    p = Presence(dnd={"104"})
    p.apply(Newstate(None, chan("PJSIP/101-0000000a", "1.1", "Up")))
    p.apply(DeviceStateChange(None, "PJSIP/103", "UNAVAILABLE"))
    p.apply(StreamGap(None, "reconnect"))
    assert p.get("101").state == "unknown" and p.get("103").state == "unknown"
    assert p.get("104").dnd and not p.get("104").available


def test_dnd():
    p = Presence(dnd=["101"])
    assert not p.get("101").available and p.get("101").dnd
    p.set_dnd("101", False)
    assert p.get("101").available
    p.set_dnd("102", True)
    p.load_dnd({"103"})
    assert p.dnd == frozenset({"103"})


def _replay_until(path: Path, p: Presence, until: float) -> None:
    import json
    for line in path.read_text().splitlines():
        frame = json.loads(line)
        if frame["t"] > until:
            break
        p.apply(parse_event(parse_raw_frame(frame["raw"])))


def test_recorded_call_owner_busy_routes_the_next_call_to_the_tier():
    # answered_owner: 101 answers at t=1.008 and talks until t=4.03 (Local/101@phones)
    p = Presence()
    _replay_until(FIX / "answered_owner.ami.jsonl", p, 2.0)
    assert p.get("101").state == "busy"
    d = decide("+79161234567", IVAN, p, OPEN, RULES)
    assert d.reason == "owner-unavailable→tier:wholesale" and d.dial == "Local/wholesale@queues"
    # after the call, 101 is free again and gets the next call
    for ev in read_events(FIX / "answered_owner.ami.jsonl"):
        p.apply(ev)
    assert p.get("101").state == "idle"
    assert decide("+79161234567", IVAN, p, OPEN, RULES).reason == "owner"


def test_recorded_burst_leaves_nobody_busy():
    p = Presence()
    busy_seen = set()
    for ev in read_events(FIX / "burst.ami.jsonl"):
        p.apply(ev)
        if isinstance(ev, Newstate) and ev.channel.state == "Up":
            busy_seen.add(DeviceMap.device_of(ev.channel.name))
    assert busy_seen
    assert all(st.state in ("idle", "unknown") for st in p.snapshot().values()), p.snapshot()


def test_dnd_owner_routes_to_tier():
    p = Presence(dnd={"101"})
    d = decide("+79161234567", IVAN, p, OPEN, RULES)
    assert d.reason == "owner-unavailable→tier:wholesale"
    assert any("owner 101 is DND" in line for line in d.trace)


async def test_presence_forgets_at_an_outage_and_learns_again_from_the_login_snapshot():
    """A phone in use when the AMI link drops and hung up during the outage (an event the
    daemon never gets: manager.c writes events only to sessions logged in then): after the
    login the gap makes presence forget what it knew, and the DeviceStateList the source
    sends (main/devicestate.c: one DeviceStateChange per device) tells it the phone is
    free, without any new event from the phone."""
    import asyncio

    from callrouter.ami.client import AmiSource
    from callrouter.config import PbxConfig
    from fakeami import FakeAmi

    presence = Presence()
    async with FakeAmi(lists=True) as fake:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=fake.port, reconnect_min=0.1, reconnect_max=0.5)
        async with AmiSource(cfg) as source:
            async def consume():
                async for event in source.events():
                    presence.apply(event)
            consuming = asyncio.create_task(consume())

            async def until(pred, timeout=10.0):
                end = asyncio.get_running_loop().time() + timeout
                while not pred():
                    assert asyncio.get_running_loop().time() < end, presence.get("101")
                    await asyncio.sleep(0.02)

            await until(lambda: bool(fake.logins))
            fake.emit("Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: PJSIP/101\r\nState: INUSE\r\n\r\n")
            await until(lambda: presence.get("101").state == "busy")
            await fake.stop_listening()
            fake.emit("Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: PJSIP/101\r\nState: NOT_INUSE\r\n\r\n")
            assert presence.get("101").state == "busy"  # the hangup was lost with the link
            await fake.start_listening()
            await until(lambda: presence.get("101").state == "idle")
            assert len(fake.logins) == 2 and fake.actions.count("devicestatelist") == 2
            consuming.cancel()
