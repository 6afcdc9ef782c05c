"""The tracker's side of a reconnect, without sockets: a StreamGap, then the CoreShowChannels
list the AMI source asks for after login (main/manager.c action_coreshowchannels, docs AMI_Events/CoreShowChannel:
one CoreShowChannel per channel up, with BridgeId and Duration, then
CoreShowChannelsComplete). Both namings, with and without hangup requests. The frames of
the calls follow app_dial.c and bridge_channel.c as in test_tracker_anynaming."""
from __future__ import annotations

from callrouter.ami.events import StreamGap, parse_event
from callrouter.tracker import CallFinished, Tracker
from expectations import assert_names_who_answered
from pbxsim import Pbx
from test_tracker_anynaming import answer, dial, hang_up_first, inbound, n, p  # noqa: F401 (n, p: fixtures)


def feed(tracker: Tracker, p: Pbx, start: int = 0):
    out = []
    for f in p.frames[start:]:
        e = StreamGap(float(f["Timestamp"]), f["Reason"]) if f["Event"] == "__gap__" else parse_event(f, None)
        out.extend(x.record for x in tracker.feed(e) if isinstance(x, CallFinished))
    assert_names_who_answered(out)
    return out


def test_snapshot_closes_calls_that_ended_unseen_and_keeps_those_still_up(p, n):
    tracker = Tracker()
    # A: answered before the outage, still up after it
    a_trunk = inbound(p, n)
    a_phone = dial(p, a_trunk, n.phones[0], n.shows[0])
    answer(p, a_trunk, a_phone, "ba")
    # B: ringing before the outage; it was answered and hung up while we were away
    b_trunk = inbound(p, n, caller="+79035550011")
    b_phone = dial(p, b_trunk, n.phones[1], n.shows[1])
    assert feed(tracker, p) == []
    seen = len(p.frames)
    p.tick(10)
    p.frames.clear()                     # the outage: nothing of it reaches us
    p.tick(2)
    p.gap()
    p.show_channels([a_phone, a_trunk], {a_phone.uniqueid: "ba", a_trunk.uniqueid: "ba"}, up_for=12)
    closed = feed(tracker, p)
    [b] = closed                         # closed at once, not when something else happens
    assert b.call_id == b_trunk.uniqueid and b.complete is False and b.ended_at is None
    assert any("between 2026-" in g for g in b.gaps)
    assert b.outcome != "answered" and b.answered_by is None   # nothing says it was answered
    assert tracker.calls_in_flight == 1 and tracker.stats.ended_unseen == 2 and seen
    # a second list (the next login) changes nothing and duplicates nothing
    p.frames.clear()
    p.show_channels([a_trunk, a_phone], {a_phone.uniqueid: "ba", a_trunk.uniqueid: "ba"}, action_id="snap-2")
    assert feed(tracker, p) == [] and tracker.calls_in_flight == 1
    p.frames.clear()
    p.tick(5)
    hang_up_first(p, a_phone, a_trunk, "ba")
    [a] = feed(tracker, p)
    assert a.call_id == a_trunk.uniqueid and a.complete is False
    assert "connection closed by the PBX" in a.gaps
    assert (a.outcome, a.answered_by, a.final_agent, a.hangup_by) == ("answered", n.names[0], n.names[0], "agent")


def test_a_call_answered_during_the_outage_is_answered_with_no_answer_time(p, n):
    tracker = Tracker()
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    feed(tracker, p)
    p.frames.clear()
    p.tick(5)
    p.gap()
    trunk.state = phone.state = "Up"     # answered and bridged while we were away
    p.show_channels([phone, trunk], {phone.uniqueid: "b1", trunk.uniqueid: "b1"}, up_for=5)
    p.tick(20)
    hang_up_first(p, trunk, phone, "b1")
    [r] = feed(tracker, p)
    assert (r.outcome, r.answered_by, r.answered_at, r.complete) == ("answered", n.names[0], None, False)
    assert r.started_at is not None and r.hangup_by == "caller"


def test_a_call_begun_during_the_outage_is_picked_up_from_the_list_in_any_order(p, n):
    tracker = Tracker()
    p.gap()
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    trunk.state = phone.state = "Up"
    p.frames[1:] = []                    # only the gap marker reached us
    p.show_channels([phone, trunk], {phone.uniqueid: "b1", trunk.uniqueid: "b1"}, up_for=7)
    p.tick(3)
    hang_up_first(p, phone, trunk, "b1")
    [r] = feed(tracker, p)
    assert r.call_id == trunk.uniqueid and r.direction == "in" and r.caller.number == "+79161234567"
    assert (r.outcome, r.answered_by, r.complete) == ("answered", n.names[0], False)
    assert r.duration_seconds == 10.0 and tracker.stats.adopted == 2
