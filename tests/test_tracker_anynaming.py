"""Issue 13: the call log on any Asterisk. Every shape runs on two device namings and with the
hangup-request events present and filtered out by the AMI user's eventfilter.

Namings:
- chan_sip accounts: phones `SIP/150010002` whose peer `callerid=202` (chan_sip.c sip_new presets
  the channel's caller ID, so Dial keeps it: app_dial.c "Determine CallerID to store in outgoing
  channel"), trunk `SIP/gw`;
- PJSIP named endpoints without a callerid: `PJSIP/ivan`; Dial then sets the callee's caller ID
  to the dialplan exten it ran (app_dial.c, same block: "no preset CallerID number by the channel
  driver. Use the dialplan extension") - the DID on an inbound call, which names nobody, so the
  channel name's resource `ivan` names the agent.

Sources for event order:
[DIAL] apps/app_dial.c: NewCallerid on the callee before DialBegin; DialEnd ANSWER, then the
       bridge; CANCEL to every ringing leg when the caller hangs up (wait_for_answer); BUSY,
       NOANSWER on ring timeout.
[BC]   main/bridge_channel.c + bridges/bridge_basic.c: the channel that hung up leaves the bridge
       first, then the two-party bridge dissolves and the peer leaves and is hung up.
[REQ]  main/manager_channels.c: HangupRequest (the channel's own side asked, e.g. a BYE) and
       SoftHangupRequest (Asterisk asked), both before the Hangup; absent for a filtered user.
[PU]   main/pickup.c ast_do_pickup: the picker is answered, Pickup published, the ringing leg ends.
[Q]    apps/app_queue.c: members dialed with the queue caller as Channel (DialBegin/DialEnd).
[LOC]  main/core_local.c: Local/x@ctx-n;1 and ;2, LocalBridge; ;2 runs the dialplan and dials.
[FM]   apps/app_followme.c findmeexec/wait_for_winner: DialEnd ANSWER on the winner *before* the
       "press 1 to accept" prompt; declined -> the winner is hung up, the next step is dialed.
[ORIG] main/pbx.c ast_pbx_outgoing_exten + main/dial.c: Originate dials the first channel with no
       caller (DialBegin/DialEnd without Channel), then the answered channel runs the dialplan.
[BT]   main/bridge_basic.c / stasis_bridges.c: BlindTransfer, then the transferee runs the
       dialplan at the extension.
[VAR]  main/manager_channels.c: a global variable's VarSet carries `Channel: none`;
       apps/app_userevent.c: UserEvent.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from callrouter.ami.events import parse_event
from callrouter.tracker import AgentRinging, CallFinished, Tracker
from expectations import assert_names_who_answered
from pbxsim import Chan, Pbx

REQUESTS = frozenset({"HangupRequest", "SoftHangupRequest"})
CLIENT = "+79161234567"


@dataclass(frozen=True)
class Naming:
    trunk: str
    phones: tuple[str, str, str]   # devices of three agents
    shows: tuple[str, str, str]    # the caller ID each phone's driver presets ("" = none)
    names: tuple[str, str, str]    # how the record must name them


NAMINGS = {
    "chan_sip accounts": Naming("SIP/gw", ("SIP/150010002", "SIP/150010003", "SIP/150010001"),
                                ("202", "203", "201"), ("202", "203", "201")),
    "pjsip named endpoints": Naming("PJSIP/trunk-provider", ("PJSIP/ivan", "PJSIP/maria", "PJSIP/olga"),
                                    ("", "", ""), ("ivan", "maria", "olga")),
}


@pytest.fixture(params=sorted(NAMINGS))
def n(request) -> Naming:
    return NAMINGS[request.param]


@pytest.fixture(params=[False, True], ids=["requests", "no-requests"])
def p(request) -> Pbx:
    return Pbx(filtered=REQUESTS if request.param else frozenset())


def records(p: Pbx):
    tracker = Tracker()
    out = []
    for f in p.frames:
        out.extend(x.record for x in tracker.feed(parse_event(f, None)) if isinstance(x, CallFinished))
    out.extend(x.record for x in tracker.close() if isinstance(x, CallFinished))
    assert_names_who_answered(out)
    return out


def inbound(p: Pbx, n: Naming, caller: str = CLIENT) -> Chan:
    return p.channel(n.trunk, exten="5550100", context="from-pstn", caller=caller)


def dial(p: Pbx, src: Chan, device: str, shows: str = "") -> Chan:
    """[DIAL]: the callee's own caller ID is the driver's preset one, else the exten Dial ran."""
    ch = p.channel(device, linked_to=src)
    p.set_callerid(ch, shows or src.exten)
    p.dial_begin(src, ch, device.split("/", 1)[1])
    p.set_state(ch, "Ringing")
    return ch


def answer(p: Pbx, src: Chan, ch: Chan, bridge: str) -> None:
    p.answer(ch)
    p.dial_end(src, ch, "ANSWER")
    if src.state != "Up":
        p.answer(src)
    p.bridge(bridge, src, ch)


def hang_up_first(p: Pbx, first: Chan, second: Chan, bridge: str) -> None:
    """`first`'s phone/trunk hangs up [REQ][BC]."""
    p.hangup_request(first)
    p.unbridge(bridge, first)
    p.hangup(first)
    p.unbridge(bridge, second)
    p.hangup_request(second, soft=True)
    p.hangup(second)


def rows(r):
    return [(leg.agent, leg.result) for leg in r.legs]


# ------------------------------------------------------------------ 1. who answered

def test_direct_answer_names_the_agent_and_keeps_the_device(p, n):
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(3)
    answer(p, trunk, phone, "b1")
    p.tick(20)
    hang_up_first(p, phone, trunk, "b1")
    [r] = records(p)
    assert (r.direction, r.outcome, r.answered_by, r.final_agent, r.hangup_by) == \
        ("in", "answered", n.names[0], n.names[0], "agent")
    assert [(leg.agent, leg.device, leg.result) for leg in r.legs] == [(n.names[0], n.phones[0], "answered")]
    assert r.caller.number == CLIENT and r.complete
    tracker = Tracker()
    facts = [f for fr in p.frames for f in tracker.feed(parse_event(fr, None))]
    assert [f.agent for f in facts if isinstance(f, AgentRinging)] == [n.names[0]]


def test_withheld_caller_is_still_an_inbound_call(p, n):
    """A trunk presenting `anonymous` (chan_sip/PJSIP for a withheld number): no phone of ours
    calls without a caller ID, so it is the outside party; the agent is still named."""
    trunk = inbound(p, n, caller="anonymous")
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, phone, "b1")
    hang_up_first(p, trunk, phone, "b1")
    [r] = records(p)
    assert (r.direction, r.answered_by, r.caller.number, r.hangup_by) == ("in", n.names[0], None, "caller")


def test_newcallerid_renames_the_callee(p, n):
    """CALLERID(num) set on the callee (a pre-dial handler, [DIAL] b()) publishes NewCallerid."""
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    p.set_callerid(phone, "777")
    answer(p, trunk, phone, "b1")
    hang_up_first(p, trunk, phone, "b1")
    [r] = records(p)
    assert (r.answered_by, r.hangup_by) == ("777", "caller")


def test_queue_member_behind_a_local_channel(p, n):
    """[Q][LOC]: the queue rings Local/<member>@agents;1, whose ;2 dials the phone."""
    trunk = inbound(p, n)
    p.queue_join(trunk, "sales")
    l1, l2 = p.local_pair(f"{n.names[0]}@agents", linked_to=trunk)
    p.dial_begin(trunk, l1, f"Local/{n.names[0]}@agents")
    phone = dial(p, l2, n.phones[0], n.shows[0])
    p.tick(2)
    p.answer(phone)
    p.dial_end(l2, phone, "ANSWER")
    p.answer(l2)
    p.bridge("b2", l2, phone)
    p.answer(l1)
    p.dial_end(trunk, l1, "ANSWER")
    p.queue_leave(trunk, "sales")
    p.answer(trunk)
    p.bridge("b1", trunk, l1)
    p.tick(30)
    hang_up_first(p, phone, l2, "b2")
    hang_up_first(p, l1, trunk, "b1")
    [r] = records(p)
    assert (r.outcome, r.queue, r.answered_by, r.final_agent, r.hangup_by) == \
        ("answered", "sales", n.names[0], n.names[0], "agent")
    assert [(leg.agent, leg.result, leg.queue) for leg in r.legs] == [(n.names[0], "answered", "sales")]


def test_pickup_names_the_colleague_who_picked_up(p, n):
    """[PU]: agent 1 rings, agent 2 dials the pickup code."""
    trunk = inbound(p, n)
    ringing = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(4)
    picker = p.channel(n.phones[1], exten="*8", context="from-internal", caller=n.shows[1])
    p.answer(picker)
    p.pickup(picker, ringing)
    p.dial_end(trunk, ringing, "CANCEL")
    p.hangup(ringing, cause=26)
    p.answer(trunk)
    p.set_linkedid(picker, trunk.linkedid)
    p.bridge("b1", trunk, picker)
    p.tick(6)
    hang_up_first(p, trunk, picker, "b1")
    [r] = records(p)
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", n.names[1], n.names[1], "caller")
    assert sorted(rows(r)) == sorted([(n.names[0], "answered-elsewhere"), (n.names[1], "answered")])


def test_blind_transfer_names_both_ends(p, n):
    """[BT]: agent 1 transfers the caller to extension 2xx; the caller's channel dials it."""
    trunk = inbound(p, n)
    a = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, a, "b1")
    p.tick(10)
    p.blind_transfer_ex(a, trunk, "203", "b1")
    p.unbridge("b1", trunk)
    trunk.exten = "203"
    b = dial(p, trunk, n.phones[1], n.shows[1])
    p.unbridge("b1", a)
    p.hangup(a)
    answer(p, trunk, b, "b2")
    p.tick(10)
    hang_up_first(p, b, trunk, "b2")
    [r] = records(p)
    # chan_sip: B shows its own 203; PJSIP: Dial set B's caller ID to the exten it dialed, 203
    assert (r.answered_by, r.final_agent, r.hangup_by) == (n.names[0], "203", "agent")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("blind", n.names[0], "203")]


def test_attended_transfer_names_both_ends(p, n):
    """[AT] docs AMI_Events/AttendedTransfer + main/bridge.c (a REFER with Replaces from agent 1's
    phone): agent 1 consults extension 203 on a second channel (a new call: its own linkedid),
    then the caller is moved into the consult bridge, swapping out agent 1's consult channel;
    the target takes the caller's (older) linkedid; AttendedTransfer follows the move."""
    trunk = inbound(p, n)
    a = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, a, "b1")
    p.tick(10)
    consult = p.channel(n.phones[0], exten="203", context="from-internal", caller=n.shows[0] or n.names[0])
    target = dial(p, consult, n.phones[1], n.shows[1])
    p.tick(3)
    answer(p, consult, target, "b2")
    p.tick(5)
    p.unbridge("b1", trunk)
    p.enter("b2", trunk, swap=consult)
    p.set_linkedid(target, trunk.linkedid)
    p.unbridge("b2", consult)
    p.attended_transfer_ex(a, consult, trunk, target, dest_type="Bridge", orig_bridge="b1",
                           second_bridge="b2", dest_bridge="b2")
    p.hangup_request(consult)
    p.hangup(consult)
    p.unbridge("b1", a)
    p.hangup_request(a, soft=True)
    p.hangup(a)
    p.tick(30)
    hang_up_first(p, trunk, target, "b2")   # the client hangs up on 203
    [r] = records(p)
    assert r.call_id == trunk.uniqueid and r.complete
    # chan_sip: the target shows its own 203; PJSIP: Dial set it to the exten dialed, 203
    assert (r.direction, r.answered_by, r.final_agent, r.hangup_by) == ("in", n.names[0], "203", "caller")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("attended", n.names[0], "203")]
    assert sorted(rows(r)) == sorted([(n.names[0], "answered"), ("203", "answered")])


def test_follow_me_to_a_mobile_number_names_the_number(p, n):
    """[FM][LOC]: Local/+31612345678@followme;2 dials the mobile through the trunk; Dial set the
    outgoing trunk channel's caller ID to the number it dialed."""
    trunk = inbound(p, n)
    l1, l2 = p.local_pair("+31612345678@followme", linked_to=trunk)
    p.dial_begin(trunk, l1, "Local/+31612345678@followme")
    mobile = dial(p, l2, n.trunk)      # the ;2 runs exten +31612345678: Dial sets that number
    p.tick(5)
    p.answer(mobile)
    p.dial_end(l2, mobile, "ANSWER")
    p.answer(l2)
    p.bridge("b2", l2, mobile)
    p.answer(l1)
    p.dial_end(trunk, l1, "ANSWER")
    p.answer(trunk)
    p.bridge("b1", trunk, l1)
    p.tick(30)
    hang_up_first(p, trunk, l1, "b1")
    hang_up_first(p, l2, mobile, "b2")
    [r] = records(p)
    assert (r.outcome, r.answered_by, r.final_agent) == ("answered", "+31612345678", "+31612345678")
    assert [(leg.agent, leg.device) for leg in r.legs] == [("+31612345678", n.trunk)]


# ------------------------------------------------------------------ 2. who hung up

@pytest.mark.parametrize("who", ["caller", "agent"])
def test_hangup_by_from_requests_or_bridge_leave_order(p, n, who):
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, phone, "b1")
    p.tick(5)
    if who == "caller":
        hang_up_first(p, trunk, phone, "b1")
    else:
        hang_up_first(p, phone, trunk, "b1")
    [r] = records(p)
    assert r.hangup_by == who


def test_a_soft_request_on_our_side_is_asterisk_or_nobody_never_the_agent(n):
    """A SoftHangupRequest is Asterisk ending a channel (main/channel.c ast_softhangup, published
    by manager_channels.c), not the phone's owner. On the agent's own phone channel first (an AMI
    Hangup action, a Dial L() limit) it names nobody; on the channel running the dialplan (the
    manager's phone on a click-to-dial call) it is `system`."""
    p = Pbx()
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, phone, "b1")
    p.tick(5)
    p.hangup_request(phone, soft=True)
    p.unbridge("b1", phone)
    p.hangup(phone)
    p.unbridge("b1", trunk)
    p.hangup_request(trunk, soft=True)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.answered_by, r.hangup_by) == ("answered", n.names[0], None)

    p = Pbx()
    phone = originate(p, n)
    p.answer(phone)
    p.dial_end(None, phone, "ANSWER")
    phone.exten = "89161234567"
    client = p.channel(n.trunk, linked_to=phone)
    p.dial_begin(phone, client, "89161234567@provider")
    answer(p, phone, client, "b1")
    p.tick(30)
    p.hangup_request(phone, soft=True)
    p.unbridge("b1", phone)
    p.hangup(phone)
    p.unbridge("b1", client)
    p.hangup_request(client, soft=True)
    p.hangup(client)
    [r] = records(p)
    assert (r.direction, r.outcome, r.hangup_by) == ("out", "answered", "system")


def test_hangup_by_is_null_when_the_evidence_does_not_decide(n):
    """No requests, and the side that left first did not clear normally (cause 127,
    interworking: a network failure, causes.h): nobody is named."""
    p = Pbx(filtered=REQUESTS)
    trunk = inbound(p, n)
    phone = dial(p, trunk, n.phones[0], n.shows[0])
    answer(p, trunk, phone, "b1")
    p.unbridge("b1", trunk)
    p.hangup(trunk, cause=127)
    p.unbridge("b1", phone)
    p.hangup(phone, cause=127)
    [r] = records(p)
    assert r.outcome == "answered" and r.hangup_by is None


# ------------------------------------------------------------------ 3. outcomes

def test_caller_gives_up_while_a_ring_group_rings_is_abandoned(p, n):
    trunk = inbound(p, n)
    a = dial(p, trunk, n.phones[0], n.shows[0])
    b = dial(p, trunk, n.phones[1], n.shows[1])
    p.tick(6)
    p.hangup_request(trunk)             # [DIAL] wait_for_answer: CANCEL to every leg
    p.dial_end(trunk, a, "CANCEL")
    p.dial_end(trunk, b, "CANCEL")
    p.hangup(a, cause=16)
    p.hangup(b, cause=16)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.hangup_by, r.answered_by) == ("abandoned", "caller", None)
    assert sorted(rows(r)) == sorted([(n.names[0], "cancelled"), (n.names[1], "cancelled")])


def test_caller_gives_up_in_a_queue_is_abandoned(p, n):
    trunk = inbound(p, n)
    p.queue_join(trunk, "sales")
    m = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(8)
    p.hangup_request(trunk)
    p.dial_end(trunk, m, "CANCEL")
    p.hangup(m)
    p._emit("QueueCallerAbandon", **p._snap(trunk), Queue="sales", Position="1", OriginalPosition="1", HoldTime="8")
    p.queue_leave(trunk, "sales")
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.queue, r.hangup_by) == ("abandoned", "sales", "caller")


def an_earlier_call(p: Pbx, n: Naming) -> None:
    """A call before the one under test: the stream shows which event classes it carries (a
    ring timeout ended by the dialplan has no hangup request of its own)."""
    earlier = inbound(p, n, caller="+74951112233")
    phone = dial(p, earlier, n.phones[1], n.shows[1])
    answer(p, earlier, phone, "b0")
    hang_up_first(p, earlier, phone, "b0")


def queue_member_times_out(p: Pbx, n: Naming, trunk: Chan) -> None:
    """[Q]: a member rings until the queue's member timeout (DialEnd NOANSWER,
    AgentRingNoAnswer), then the caller waits for the retry."""
    m = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(15)
    p.agent_event("AgentRingNoAnswer", trunk, m, "sales", n.phones[0], RingTime="15000")
    p.dial_end(trunk, m, "NOANSWER")
    p.hangup(m, cause=19)
    p.tick(3)


def test_caller_gives_up_waiting_in_a_queue_between_rings_is_abandoned(p, n):
    """[Q] app_queue.c: the caller hangs up while no member rings: QueueCallerAbandon, then
    QueueCallerLeave, then Queue() ends with the channel; QUEUESTATUS is not set."""
    trunk = inbound(p, n)
    p.var(trunk, "CLIENT_ID", "c-1")
    p.queue_join(trunk, "sales")
    queue_member_times_out(p, n, trunk)
    p.hangup_request(trunk)
    p._emit("QueueCallerAbandon", **p._snap(trunk), Queue="sales", Position="1", OriginalPosition="1", HoldTime="18")
    p.queue_leave(trunk, "sales")
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.queue, r.hangup_by) == ("abandoned", "sales", "caller")
    assert rows(r) == [(n.names[0], "no-answer")]


def test_queue_timeout_is_missed(p, n):
    """[Q] app_queue.c: on the queue's timeout record_abandoned() also sends QueueCallerAbandon,
    but Queue() returns and sets QUEUESTATUS=TIMEOUT; the dialplan then hangs up."""
    an_earlier_call(p, n)
    trunk = inbound(p, n)
    p.var(trunk, "CLIENT_ID", "c-1")
    p.queue_join(trunk, "sales")
    queue_member_times_out(p, n, trunk)
    p._emit("QueueCallerAbandon", **p._snap(trunk), Queue="sales", Position="1", OriginalPosition="1", HoldTime="18")
    p.queue_leave(trunk, "sales")
    p.var(trunk, "QUEUESTATUS", "TIMEOUT")
    p.hangup(trunk)
    _, r = records(p)
    assert (r.outcome, r.queue) == ("missed", "sales")
    assert r.hangup_by == (None if "HangupRequest" in p.filtered else "system")


def test_caller_hangs_up_in_the_router_agi_before_anything_rang(p, n):
    """res/res_agi.c: the AGI ends with AGISTATUS=HANGUP when the channel hung up during it."""
    trunk = inbound(p, n)
    p.tick(2)
    p.hangup_request(trunk)
    p.var(trunk, "AGISTATUS", "HANGUP")
    p.hangup(trunk)
    [r] = records(p)
    assert (r.direction, r.outcome, r.hangup_by, r.legs) == ("in", "abandoned", "caller", ())


def test_ring_timeout_is_missed_and_hangup_by_needs_evidence(p, n):
    an_earlier_call(p, n)
    trunk = inbound(p, n)
    a = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(20)
    p.dial_end(trunk, a, "NOANSWER")
    p.hangup(a, cause=19)
    p.hangup(trunk)                     # the dialplan ends: Hangup() publishes no request
    _, r = records(p)
    assert r.outcome == "missed"
    # with requests in the stream, a bare Hangup of the dialplan channel is Asterisk's doing;
    # without them it could be the caller as well: not named
    assert r.hangup_by == (None if "HangupRequest" in p.filtered else "system")
    assert rows(r) == [(n.names[0], "no-answer")]


@pytest.mark.parametrize("statuses, outcome", [(("BUSY", "BUSY"), "busy"), (("BUSY", "CONGESTION"), "busy"),
                                               (("BUSY", "NOANSWER"), "missed")])
def test_busy_only_when_every_leg_was_busy(p, n, statuses, outcome):
    trunk = inbound(p, n)
    legs = [dial(p, trunk, n.phones[i], n.shows[i]) for i in range(2)]
    p.tick(3)
    for leg, status in zip(legs, statuses):
        p.dial_end(trunk, leg, status)
        p.hangup(leg, cause=17 if status == "BUSY" else 19)
    p.hangup(trunk)
    [r] = records(p)
    assert r.outcome == outcome and r.answered_by is None


def test_follow_me_confirmation_declined_is_not_an_answer(p, n):
    """[FM]: the mobile answers (DialEnd ANSWER), hears "press 1", declines; follow-me hangs it
    up and tries the next step, which times out."""
    trunk = inbound(p, n)
    p.answer(trunk)                     # FollowMe answers the caller for music on hold
    mobile = dial(p, trunk, "Local/+31612345678@followme")
    p.tick(4)
    p.answer(mobile)
    p.dial_end(trunk, mobile, "ANSWER")
    p.tick(5)                           # the prompt; the callee declines
    p.hangup_request(mobile, soft=True)
    p.hangup(mobile)
    desk = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(20)
    p.dial_end(trunk, desk, "NOANSWER")
    p.hangup(desk, cause=19)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.outcome, r.answered_by, r.final_agent) == ("missed", None, None)
    assert rows(r) == [("+31612345678", "no-answer"), (n.names[0], "no-answer")]


def test_follow_me_through_a_local_channel_declined_is_not_an_answer(p, n):
    """[FM][LOC][DIAL]: follow-me rings Local/+31612345678@followme;1; its ;2 dials the mobile
    through the trunk, which answers and is bridged with ;2; ;1 answers (DialEnd ANSWER to the
    caller) and plays "press 1"; the callee declines: follow-me hangs ;1 up (;2 and the mobile
    go with it) without ever bridging it with the caller, then rings the desk, which times out."""
    an_earlier_call(p, n)                # the stream carries bridge events
    trunk = inbound(p, n)
    p.answer(trunk)
    l1, l2 = p.local_pair("+31612345678@followme", linked_to=trunk)
    p.dial_begin(trunk, l1, "Local/+31612345678@followme")
    mobile = dial(p, l2, n.trunk)
    p.tick(6)
    p.answer(mobile)
    p.dial_end(l2, mobile, "ANSWER")
    p.answer(l2)
    p.bridge("bm", l2, mobile)
    p.answer(l1)
    p.dial_end(trunk, l1, "ANSWER")
    p.tick(5)                            # "press 1 to accept": declined
    p.hangup_request(l1, soft=True)
    p.hangup(l1)
    p.unbridge("bm", l2)
    p.hangup(l2)
    p.unbridge("bm", mobile)
    p.hangup(mobile)
    desk = dial(p, trunk, n.phones[0], n.shows[0])
    p.tick(20)
    p.dial_end(trunk, desk, "NOANSWER")
    p.hangup(desk, cause=19)
    p.hangup(trunk)
    _, r = records(p)
    assert (r.outcome, r.answered_by, r.final_agent, r.answered_at) == ("missed", None, None, None)
    assert rows(r) == [("+31612345678", "no-answer"), (n.names[0], "no-answer")]


# ------------------------------------------------------------------ 4. originated calls

def originate(p: Pbx, n: Naming, callerid: str = "") -> Chan:
    """[ORIG]: the manager's phone rings first (no caller on the dial). Originate's CallerID
    (`callerid`), when given, is what the manager's phone shows: often the client's number."""
    phone = p.channel(n.phones[0], exten="s", context="from-internal", caller=callerid or n.shows[0])
    p.dial_begin(None, phone, n.phones[0].split("/", 1)[1])
    p.set_state(phone, "Ringing")
    return phone


@pytest.mark.parametrize("callerid", ["", "89161234567"], ids=["own-callerid", "client-callerid"])
def test_click_to_dial_answered(p, n, callerid):
    phone = originate(p, n, callerid)
    p.tick(2)
    p.answer(phone)
    p.dial_end(None, phone, "ANSWER")
    phone.exten = "89161234567"        # the answered channel runs the dialplan at the client's number
    client = p.channel(n.trunk, linked_to=phone)
    p.dial_begin(phone, client, "89161234567@provider")
    p.tick(4)
    answer(p, phone, client, "b1")
    p.tick(30)
    hang_up_first(p, client, phone, "b1")
    [r] = records(p)
    # the client's number shown on the manager's phone names the client, not the manager: then
    # only the channel name's resource is left (`150010002` for the chan_sip account)
    me = n.names[0] if not callerid else n.phones[0].split("/", 1)[1]
    assert (r.direction, r.outcome, r.agent, r.final_agent, r.hangup_by) == \
        ("out", "answered", me, me, "caller")
    assert r.callee.number == CLIENT and r.complete


def test_click_to_dial_client_rejects_is_busy(p, n):
    phone = originate(p, n)
    p.answer(phone)
    p.dial_end(None, phone, "ANSWER")
    phone.exten = "89161234567"
    client = p.channel(n.trunk, linked_to=phone)
    p.dial_begin(phone, client, "89161234567@provider")
    p.tick(2)
    p.dial_end(phone, client, "BUSY")
    p.hangup(client, cause=17)
    p.hangup(phone)
    [r] = records(p)
    assert (r.direction, r.outcome, r.agent, r.answered_by) == ("out", "busy", n.names[0], None)


def test_click_to_dial_the_manager_never_accepts_is_failed(p, n):
    phone = originate(p, n)
    p.tick(30)
    p.dial_end(None, phone, "NOANSWER")
    p.hangup(phone, cause=19)
    [r] = records(p)
    assert (r.direction, r.outcome, r.agent, r.answered_by, r.legs) == ("out", "failed", n.names[0], None, ())
    assert r.complete


# ------------------------------------------------------------------ 5. nothing invented

def test_global_varsets_user_events_and_unseen_channels_create_no_call(p, n):
    """[VAR]; and events for a channel whose Newchannel was never seen."""
    p.global_var("NIGHT_MODE", "1")
    p.user_event("CrmSync", Client="c-1")
    stray = Chan(f"{n.phones[0]}-000000ff", "1795369999.1", "1795369999.1", caller_num=n.shows[0])
    p.var(stray, "CLIENT_ID", "c-9")
    p.set_state(stray, "Up")
    p.hangup(stray)
    tracker = Tracker()
    out = [f for fr in p.frames for f in tracker.feed(parse_event(fr, None))]
    out += tracker.close()
    assert out == [] and tracker.calls_in_flight == 0
    s = tracker.stats
    assert (s.no_channel, s.user_events, s.unknown_channel) == (1, 1, 3)
    assert s.varsets_ignored == 2
