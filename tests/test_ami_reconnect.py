"""A 10 s AMI outage against the fake PBX over real TCP: what the call log says afterwards.

Shapes follow Asterisk's own behaviour:
- after a login, `CoreShowChannels` lists every channel up with its `BridgeId`, then
  `CoreShowChannelsComplete` (main/manager.c action_coreshowchannels, docs AMI_Events/CoreShowChannel); `BridgeList`
  (main/manager_bridges.c), `DeviceStateList` (main/devicestate.c) and `ExtensionStateList`
  (main/manager.c) answer the same way: Success + `EventList: start`, items, `...Complete`;
- events that happen while no client is connected are not kept for it (manager.c writes
  events to the sessions logged in at that moment).
"""
from __future__ import annotations

import asyncio

import pytest

from callrouter.ami.client import AmiError, AmiSource
from callrouter.ami.events import CoreShowChannel, CoreShowChannelsComplete, DeviceStateChange, StreamGap
from callrouter.config import PbxConfig
from callrouter.tracker import CallFinished, Tracker
from expectations import assert_names_who_answered
from fakeami import FakeAmi
from pbxsim import Pbx

OUTAGE = 10.0
CLIENT_B = "+79035550011"


def inbound(p: Pbx, trunk_device: str, agent_device: str, agent_shows: str, caller: str, bridge: str):
    """Dial() of an inbound call (app_dial.c): the agent's channel shows its own caller ID
    (`agent_shows`: chan_sip's peer callerid, PJSIP's endpoint callerid), answered, bridged."""
    trunk = p.channel(trunk_device, exten="5550100", context="from-pstn", caller=caller)
    phone = p.channel(agent_device, caller=agent_shows, linked_to=trunk)
    p.dial_begin(trunk, phone, agent_device.split("/", 1)[1])
    p.set_state(phone, "Ringing")
    p.answer(phone)
    p.dial_end(trunk, phone, "ANSWER")
    p.answer(trunk)
    p.bridge(bridge, trunk, phone)
    return trunk, phone


async def test_calls_up_across_a_10s_outage_one_ending_during_it() -> None:
    p = Pbx(timestamps=False)  # times: when the source read each frame
    sent = 0

    def flush(fake: FakeAmi) -> None:
        nonlocal sent
        for frame in p.frames[sent:]:
            fake.emit(p.raw(frame))
        sent = len(p.frames)

    async with FakeAmi(lists=True) as fake:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=fake.port, username="callrouter",
                        secret="s3cret")  # the shipped backoff: reconnect_min 0.5 s, reconnect_max 30 s
        tracker = Tracker("main")
        records = []
        events = []

        async def consume(source: AmiSource) -> None:
            async for event in source.events():
                events.append(event)
                records.extend(f.record for f in tracker.feed(event) if isinstance(f, CallFinished))

        async def until(cond, timeout: float = 5.0) -> None:
            async with asyncio.timeout(timeout):
                while not cond():
                    await asyncio.sleep(0.02)

        async with AmiSource(cfg) as source:
            reading = asyncio.create_task(consume(source))
            await until(lambda: source.connected and fake.actions.count("extensionstatelist") == 1)
            # A: a PJSIP endpoint named `ivan` whose caller ID is 101; B: a chan_sip account showing 202
            a_trunk, a_phone = inbound(p, "PJSIP/provider", "PJSIP/ivan", "101", "+79161234567", "ba")
            b_trunk, b_phone = inbound(p, "SIP/provider", "SIP/150010002", "202", "+79035550011", "bb")
            p._emit("DeviceStateChange", Device="PJSIP/ivan", State="INUSE")
            flush(fake)
            await until(lambda: len(events) >= len(p.frames))

            await fake.stop_listening()          # the PBX is gone for 10 s ...
            await until(lambda: not source.connected)
            p.hangup(b_trunk)                     # ... B ends meanwhile (nobody hears it)
            p.hangup(b_phone)
            c_trunk, c_phone = inbound(p, "PJSIP/provider", "PJSIP/anna", "102", "+74951112233", "bc")
            flush(fake)                           # ... and C starts
            await asyncio.sleep(OUTAGE)
            back = asyncio.get_running_loop().time()
            await fake.start_listening()
            await until(lambda: len(fake.login_times) == 2, timeout=5.0)
            relogin = fake.login_times[1] - back
            assert relogin < 3.0, f"logged in again {relogin:.2f}s after the PBX came back"

            # the snapshot closes B at once: before anything else happens to A or C
            await until(lambda: len(records) == 1)
            [b] = records
            assert b.call_id == b_trunk.uniqueid and b.complete is False
            assert any("hung up while the AMI connection was down, between" in g for g in b.gaps)
            assert b.answered_by == "202" and b.ended_at is None and b.duration_seconds is None

            # A and C go on and end after the reconnect
            p.hangup_request(a_trunk)
            p.unbridge("ba", a_trunk, a_phone)
            p.hangup(a_trunk)
            p.hangup(a_phone)
            p.hangup_request(c_phone)
            p.unbridge("bc", c_phone, c_trunk)
            p.hangup(c_phone)
            p.hangup(c_trunk)
            flush(fake)
            await until(lambda: len(records) == 3)
            await source.aclose()
            await reading

    a, c = records[1:]
    assert len({r.call_id for r in records}) == 3                      # none duplicated
    assert a.call_id == a_trunk.uniqueid and a.complete is False
    assert any("connection" in g for g in a.gaps)                       # the gap is named
    assert (a.outcome, a.answered_by, a.final_agent, a.hangup_by) == ("answered", "101", "101", "caller")
    assert a.ended_at is not None
    assert c.call_id == c_trunk.uniqueid and c.complete is False
    assert any("first seen" in g and "after a reconnect" in g for g in c.gaps)
    # C was found bridged with its caller: answered by the phone it was bridged with, when
    # unknown; it began about OUTAGE seconds before it was listed (CoreShowChannel Duration)
    assert (c.direction, c.outcome, c.answered_by, c.answered_at) == ("in", "answered", "102", None)
    assert c.started_at is not None and c.ended_at is not None
    assert OUTAGE - 1 <= (c.ended_at - c.started_at).total_seconds() <= OUTAGE + 3
    assert_names_who_answered(records)
    # the stream carried the marker, then the snapshot's items, in order; presence's device
    # states came back with DeviceStateList
    gap = next(i for i, e in enumerate(events) if isinstance(e, StreamGap))
    assert any(isinstance(e, CoreShowChannel) for e in events[gap:])
    assert any(isinstance(e, DeviceStateChange) and e.device == "PJSIP/ivan" for e in events[gap:])
    assert tracker.stats.ended_unseen == 2 and tracker.stats.adopted == 2 and tracker.stats.snapshots == 2
    assert fake.actions.count("coreshowchannels") == 2 and fake.actions.count("devicestatelist") == 2
    assert source.stats.reconnects == 1


async def test_backoff_starts_over_after_every_login(monkeypatch, caplog) -> None:
    """Five drops, each followed by a successful login: every wait is the shortest one (without
    the reset they would double: 0.05, 0.1, 0.2, 0.4, 0.8 s with the jitter at its top)."""
    monkeypatch.setattr("callrouter.ami.client.random.uniform", lambda lo, hi: hi)
    frames = [f"Event: UserEvent\r\nUserEvent: tick{i}\r\n\r\n" for i in range(12)]
    caplog.set_level("WARNING", logger="callrouter.ami.client")
    async with FakeAmi(frames, drop_after=[2, 4, 6, 8, 10]) as fake:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=fake.port, username="callrouter",
                        secret="s3cret", reconnect_min=0.05, reconnect_max=30.0)
        async with AmiSource(cfg, snapshot_on_login=False) as source:
            got = []
            async with asyncio.timeout(10):
                async for event in source.events():
                    got.append(event)
                    if len(got) == 12 + 5:
                        break
    waits = [r.getMessage().rsplit(" ", 1)[1] for r in caplog.records if "reconnecting in" in r.getMessage()]
    assert waits == ["0.05s"] * 5 and len(fake.logins) == 6
    assert sum(isinstance(e, StreamGap) for e in got) == 5


async def test_action_api_and_on_login_hook_see_the_list_and_so_does_the_stream() -> None:
    """`await source.action(...)` answers with the whole list (Success + items + Complete,
    main/manager.c); the items also reach events(), in order, for the tracker and presence."""
    p = Pbx(timestamps=False)
    trunk = p.channel("SIP/gw", exten="5550100", caller=CLIENT_B)
    seen: list = []

    async def hook(source: AmiSource) -> None:
        seen.append(await source.action({"Action": "CoreShowChannels"}))

    async with FakeAmi([p.raw(f) for f in p.frames], lists=True) as fake:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=fake.port, username="callrouter", secret="s3cret")
        source = AmiSource(cfg, on_login=hook)
        with pytest.raises(AmiError):
            await source.action({"Action": "CoreShowChannels"})   # not connected yet
        async with source:
            got = []
            async with asyncio.timeout(5):
                async for event in source.events():
                    got.append(event)
                    if sum(isinstance(e, CoreShowChannelsComplete) for e in got) == 2:
                        break                                   # the snapshot's list, then the hook's
                while source.stats.snapshots < 1:      # the hook returns after its list is read
                    await asyncio.sleep(0.01)
    [resp] = seen
    assert [m.get("Event") for m in resp] == [None, "CoreShowChannel", "CoreShowChannelsComplete"]
    assert resp[1]["Uniqueid"] == trunk.uniqueid
    listed = [e for e in got if isinstance(e, CoreShowChannel)]
    assert [e.channel.uniqueid for e in listed] == [trunk.uniqueid, trunk.uniqueid]
    assert fake.actions[:1] == ["login"] and "extensionstatelist" in fake.actions
