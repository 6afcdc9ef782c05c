"""Call shapes the lab recordings lack, played by the scripted PBX: real SIP naming,
attended transfer with a new linkedid, pickup, queue timeout, outages, no timestamps."""
import json
import subprocess
import sys

from callrouter.ami.events import StreamGap, parse_event
from callrouter.calllog.walk import replay_records as replay
from callrouter.tracker import CallFinished, Tracker

from expectations import assert_names_who_answered
from pbxsim import Pbx


def records(pbx: Pbx, extra=()):
    events = [parse_event(f, None) for f in pbx.frames]
    events.extend(extra)
    out = replay(events)
    assert_names_who_answered(out)
    return out


def inbound(p: Pbx, did="5550100", caller="+79161234567"):
    trunk = p.channel("PJSIP/provider", exten=did, context="from-pstn", caller=caller, name="Ivan")
    p.var(trunk, "ROUTE_DIAL", "PJSIP/101")
    p.var(trunk, "CLIENT_ID", "c-1001")
    return trunk


def ring_and_answer(p: Pbx, trunk, device: str, ring: float, bridge: str):
    phone = p.channel(device, exten="s", context="from-internal", caller=trunk.caller_num, linked_to=trunk)
    p.dial_begin(trunk, phone)
    p.set_state(phone, "Ringing")
    p.tick(ring)
    p.answer(phone)
    p.dial_end(trunk, phone, "ANSWER")
    p.answer(trunk)
    p.bridge(bridge, phone, trunk)
    return phone


def test_pjsip_inbound_caller_hangs_up():
    p = Pbx()
    trunk = inbound(p)
    p.tick(0.2)
    phone = ring_and_answer(p, trunk, "PJSIP/101", 3.0, "b1")
    p.tick(10)
    p.hangup_request(trunk)              # the caller's BYE
    p.unbridge("b1", trunk, phone)
    p.hangup(trunk)
    p.hangup_request(phone, soft=True)   # Asterisk ends the agent's leg
    p.hangup(phone)
    [r] = records(p)
    assert (r.direction, r.outcome, r.hangup_by, r.answered_by, r.final_agent) == \
        ("in", "answered", "caller", "101", "101")
    assert r.caller.number == "+79161234567" and r.caller.name == "Ivan"
    assert r.callee.raw == "5550100"
    assert r.client_id == "c-1001" and r.route.dial == "PJSIP/101"
    assert r.ring_seconds == 3.2 and r.talk_seconds == 10.0
    assert [(leg.agent, leg.device, leg.result) for leg in r.legs] == [("101", "PJSIP/101", "answered")]
    assert r.complete and r.call_id == trunk.uniqueid
    assert r.started_at is not None and r.started_at.year == 2026


def test_attended_transfer_changes_linkedid_yet_stays_one_call():
    p = Pbx()
    trunk = inbound(p)
    a = ring_and_answer(p, trunk, "PJSIP/101", 1.0, "b1")
    p.tick(5)
    # 101 consults 104 on a second channel: a new call, a new linkedid
    consult = p.channel("PJSIP/101", exten="104", context="from-internal", caller="101")
    target = p.channel("PJSIP/104", exten="s", context="from-internal", caller="101", linked_to=consult)
    p.dial_begin(consult, target)
    p.tick(2)
    p.answer(target)
    p.dial_end(consult, target, "ANSWER")
    p.answer(consult)
    p.bridge("b2", consult, target)
    p.tick(3)
    p.attended_transfer(a, consult, trunk, target)
    p.unbridge("b2", target)
    p.set_linkedid(target, trunk.linkedid)
    p.bridge("b1", target)
    p.unbridge("b1", a)
    p.unbridge("b2", consult)
    p.hangup(a)
    p.hangup(consult)
    p.tick(20)
    p.hangup_request(target)    # 104 hangs up first
    p.unbridge("b1", target, trunk)
    p.hangup(target)
    p.hangup_request(trunk, soft=True)
    p.hangup(trunk)
    [r] = records(p)
    assert r.call_id == trunk.uniqueid
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "101", "104", "agent")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("attended", "101", "104")]
    assert [(leg.agent, leg.result) for leg in r.legs] == [("101", "answered"), ("104", "answered")]
    assert r.complete


def test_pickup_by_a_colleague():
    p = Pbx()
    trunk = inbound(p)
    ringing = p.channel("PJSIP/101", caller=trunk.caller_num, linked_to=trunk)
    p.dial_begin(trunk, ringing)
    p.set_state(ringing, "Ringing")
    p.tick(4)
    picker = p.channel("PJSIP/102", exten="*8", context="from-internal", caller="102")
    p.pickup(picker, ringing)
    p.dial_end(trunk, ringing, "CANCEL")
    p.hangup(ringing, cause=26)
    p.answer(trunk)
    p.set_linkedid(picker, trunk.linkedid)
    p.bridge("b1", trunk, picker)
    p.tick(6)
    p.hangup_request(picker)
    p.unbridge("b1", picker, trunk)
    p.hangup(picker)
    p.hangup_request(trunk, soft=True)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.answered_by, r.final_agent) == ("answered", "102", "102")
    assert {(leg.agent, leg.result) for leg in r.legs} == {("101", "answered-elsewhere"), ("102", "answered")}


def test_queue_timeout_is_missed_even_with_queue_caller_abandon():
    p = Pbx()
    trunk = inbound(p)
    p._emit("QueueCallerJoin", **p._snap(trunk), Queue="retail", Position="1", Count="1")
    member = p.channel("PJSIP/120", linked_to=trunk)
    p.dial_begin(trunk, member)
    p.tick(15)
    p.dial_end(trunk, member, "NOANSWER")
    p.hangup(member, cause=0)
    # Asterisk reports a queue *timeout* as an abandon; the dialplan then hangs up
    p._emit("QueueCallerAbandon", **p._snap(trunk), Queue="retail", HoldTime="15", Position="1",
            OriginalPosition="1")
    p.hangup_request(trunk, soft=True)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.hangup_by, r.queue) == ("missed", "system", "retail")
    assert [(leg.agent, leg.result, leg.queue) for leg in r.legs] == [("120", "no-answer", "retail")]


def test_outbound_through_a_trunk_busy():
    p = Pbx()
    phone = p.channel("PJSIP/101", exten="89161234567", context="from-internal", caller="101", name="Anna")
    trunk = p.channel("PJSIP/provider", linked_to=phone)
    p.dial_begin(phone, trunk, "PJSIP/89161234567@provider")
    p.tick(1)
    p.dial_end(phone, trunk, "BUSY")
    p.hangup(trunk, cause=17)
    p.hangup_request(phone, soft=True)
    p.hangup(phone)
    [r] = records(p)
    assert (r.direction, r.outcome, r.agent, r.final_agent) == ("out", "busy", "101", "101")
    assert r.callee.number == "+79161234567"
    assert r.caller.raw == "101"


def test_internal_call_not_answered():
    p = Pbx()
    a = p.channel("PJSIP/101", exten="102", context="from-internal", caller="101")
    b = p.channel("PJSIP/102", linked_to=a)
    p.dial_begin(a, b)
    p.tick(20)
    p.dial_end(a, b, "NOANSWER")
    p.hangup(b, cause=0)
    p.hangup_request(a, soft=True)
    p.hangup(a)
    [r] = records(p)
    assert (r.direction, r.outcome, r.callee.raw) == ("internal", "missed", "102")
    assert [(leg.agent, leg.result) for leg in r.legs] == [("102", "no-answer")]


def test_outage_marks_calls_in_flight_incomplete():
    p = Pbx()
    trunk = inbound(p)
    phone = ring_and_answer(p, trunk, "PJSIP/101", 1.0, "b1")
    events = [parse_event(f, None) for f in p.frames]
    events.append(StreamGap(p.t, "AMI connection lost"))
    p.frames.clear()
    p.tick(30)
    p.hangup_request(trunk)
    p.hangup(trunk)
    p.hangup(phone)
    events.extend(parse_event(f, None) for f in p.frames)
    [r] = replay(events)
    assert r.complete is False and "AMI connection lost" in r.gaps
    assert r.answered_by == "101"  # what was seen is still reported


def test_capture_starting_mid_call_invents_no_call_and_counts_what_it_skipped():
    """Only a channel's Newchannel (manager_channels.c, published when the channel is allocated)
    or the PBX's own channel list creates it: events for channels never seen create nothing."""
    p = Pbx()
    trunk = inbound(p)
    phone = ring_and_answer(p, trunk, "PJSIP/101", 1.0, "b1")
    p.frames.clear()  # the capture begins here
    p.tick(5)
    p.hangup_request(trunk)
    p.hangup(trunk)
    p.hangup(phone)
    tracker = Tracker()
    finished = [f for fr in p.frames for f in tracker.feed(parse_event(fr, None)) if isinstance(f, CallFinished)]
    finished += tracker.close()
    assert finished == []
    assert tracker.stats.unknown_channel == 3 and tracker.calls_in_flight == 0


def test_open_calls_at_end_of_capture_are_reported_incomplete():
    p = Pbx()
    trunk = inbound(p)
    ring_and_answer(p, trunk, "PJSIP/101", 1.0, "b1")
    [r] = records(p)
    assert r.complete is False and r.gaps


def test_json_array_capture_without_timestamps(tmp_path):
    p = Pbx(timestamps=False)
    trunk = inbound(p)
    phone = ring_and_answer(p, trunk, "SIP/101", 1.0, "b1")
    p.hangup_request(phone)
    p.hangup(phone)
    p.hangup(trunk)
    path = tmp_path / "capture.json"
    path.write_text(json.dumps(p.frames))
    out = subprocess.run([sys.executable, "-m", "callrouter.cli", "replay", str(path)],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    [r] = [json.loads(line) for line in out.splitlines()]
    assert (r["outcome"], r["answered_by"], r["hangup_by"]) == ("answered", "101", "agent")
    assert r["talk_seconds"] is None and r["started_at"] is None  # nothing said when: no guess
    assert r["complete"] is True
