"""Call shapes of real Asterisk 13-22 traffic the lab recordings lack, played by the scripted PBX.

Each test cites where its event order comes from. Sources:
[AT]  docs.asterisk.org .../AMI_Events/AttendedTransfer (Orig/Second transferer, DestType Bridge|App|Link|Threeway)
[BR]  asterisk main/bridge.c: two_bridge_attended_transfer / bridge_swap_attended_transfer (a 2+2 party
      transfer *swaps* one channel into the other bridge: BridgeEnter with SwapUniqueid) and
      bridge_channel_update_linkedids (every channel pushed into a bridge takes the OLDEST linkedid of
      its members, the swapped-out channel excluded)
[BB]  asterisk main/bridge_basic.c: DTMF atxfer dials the target through a Local channel requested by the
      transferer (same linkedid), publish_transfer_success() passes the transferer as both Orig and Second
      transferer, after bridge_merge()
[PU]  asterisk main/pickup.c ast_do_pickup: answers the picker, ast_channel_move(target, picker) (a
      masquerade: identities follow the tech, the target's old identity is renamed '<name><ZOMBIE>' and
      hung up), THEN publishes Pickup with the pre-move snapshots; the caller's Dial then sees ANSWER from
      the picker's identity
[LO]  docs AMI_Events/LocalOptimizationBegin/End + the recordings' ring_group/queue captures: the real
      channel is swapped into the outer bridge (BridgeEnter SwapUniqueid=<;1>), then the Local pair hangs up
[Q]   docs AMI_Events QueueCallerJoin/AgentCalled/AgentConnect/AgentComplete/AgentRingNoAnswer(ms);
      app_queue publishes DialBegin/DialEnd with the queue caller as Channel
[VM]  app_voicemail: VoiceMail() answers the caller after Dial() gave up (NOANSWER); the caller ends with a BYE
"""
from callrouter.ami.events import parse_event
from callrouter.calllog.walk import replay_records as replay
from callrouter.tracker.facts import AgentAnswered, AgentEnded, AgentRinging
from callrouter.tracker.tracker import Tracker

from expectations import assert_names_who_answered
from pbxsim import Pbx


def records(p: Pbx):
    out = replay([parse_event(f, None) for f in p.frames])
    assert_names_who_answered(out)
    return out


def facts(p: Pbx):
    tr = Tracker()
    out = []
    for f in p.frames:
        out.extend(tr.feed(parse_event(f, None)))
    out.extend(tr.close())
    return out


def inbound(p: Pbx, tech="PJSIP", did="5550100", caller="+79161234567"):
    trunk = p.channel(f"{tech}/provider", exten=did, context="from-pstn", caller=caller, name="Ivan")
    p.var(trunk, "ROUTE_DIAL", f"{tech}/101")
    p.var(trunk, "CLIENT_ID", "c-1001")
    return trunk


def ring(p: Pbx, src, device):
    ch = p.channel(device, caller=src.caller_num, linked_to=src)
    p.dial_begin(src, ch)
    p.set_state(ch, "Ringing")
    return ch


def answer(p: Pbx, src, ch, bridge):
    p.answer(ch)
    p.dial_end(src, ch, "ANSWER")
    if src.state != "Up":
        p.answer(src)
    p.bridge(bridge, ch, src)


def bye(p: Pbx, ch, bridge=None, peer=None):
    """ch's phone/trunk hangs up; Asterisk then ends the bridge peer."""
    p.hangup_request(ch)
    if bridge:
        p.unbridge(bridge, ch)
    p.hangup(ch)
    if peer is not None:
        if bridge:
            p.unbridge(bridge, peer)
        p.hangup_request(peer, soft=True)
        p.hangup(peer)


def rows(r):
    return [(leg.agent, leg.result) for leg in r.legs]


# ------------------------------------------------------------------ attended transfers

def test_phone_attended_transfer_moves_the_caller_into_the_consult_bridge():
    """PJSIP REFER/Replaces from 101: two 2-party bridges -> SWAP_TO_PEER [BR]: the caller leaves b1 and
    enters b2 swapping out 101's consult channel; 104 takes the caller's (older) linkedid; the
    AttendedTransfer event is published after the move [BR], DestType=Bridge [AT]."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    p.tick(2)
    answer(p, trunk, a, "b1")
    p.tick(10)
    consult = p.channel("PJSIP/101", exten="104", context="from-internal", caller="101")
    target = ring(p, consult, "PJSIP/104")
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
    bye(p, trunk, "b2", target)          # the client hangs up on 104
    [r] = records(p)
    assert r.call_id == trunk.uniqueid and r.complete
    assert (r.direction, r.outcome, r.answered_by, r.final_agent, r.hangup_by) == \
        ("in", "answered", "101", "104", "caller")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("attended", "101", "104")]
    assert sorted(rows(r)) == [("101", "answered"), ("104", "answered")]
    assert r.ring_seconds == 2.0 and r.duration_seconds == 50.0


def test_dtmf_atxfer_through_a_local_channel_optimized_away():
    """features.conf atxfer (*2) [BB]: 101 is pulled into a new bridge with Local/104@from-internal;1 that
    Asterisk requested for it (same linkedid: no change), ;2 dials PJSIP/104; when 101 hangs up, the
    bridges merge (Local;1 enters b1), AttendedTransfer names 101 as both transferers and Local;1 as
    the target; then the Local pair optimizes away [LO]: PJSIP/104 swaps into b1."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    p.tick(1)
    answer(p, trunk, a, "b1")
    p.tick(5)
    p.unbridge("b1", a)                      # *2: 101 leaves the caller (on hold) ...
    l1, l2 = p.local_pair("104@from-internal", linked_to=a)
    p.enter("b2", a)
    target = ring(p, l2, "PJSIP/104")
    p.tick(3)
    answer(p, l2, target, "b3")
    p.answer(l1)
    p.enter("b2", l1)
    p.tick(4)
    p.hangup_request(a)                      # 101 hangs up: complete the transfer
    p.unbridge("b2", a, l1)
    p.enter("b1", l1)
    p.attended_transfer_ex(a, a, trunk, l1, dest_type="Bridge", orig_bridge="b1", second_bridge="b2",
                           dest_bridge="b1", is_external="No")
    p.hangup(a)
    p.local_optimization_begin(l1, l2)
    p.unbridge("b3", target)
    p.enter("b1", target, swap=l1)
    p.unbridge("b1", l1)
    p.local_optimization_end(l1, l2, success=True)
    p.unbridge("b3", l2)
    p.hangup(l1)
    p.hangup(l2)
    p.tick(20)
    bye(p, target, "b1", trunk)              # 104 hangs up
    [r] = records(p)
    assert r.complete and r.call_id == trunk.uniqueid
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "101", "104", "agent")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("attended", "101", "104")]
    assert sorted(rows(r)) == [("101", "answered"), ("104", "answered")]


def test_attended_transfer_linked_by_a_local_pair():
    """DestType=Link [AT]: bridges that cannot merge are joined by a new Local pair, ;1 swapped into the
    caller's bridge for 101, ;2 into the consult bridge for 101's consult channel [BR]."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    answer(p, trunk, a, "b1")
    p.tick(5)
    consult = p.channel("PJSIP/101", exten="104", context="from-internal", caller="101")
    target = ring(p, consult, "PJSIP/104")
    p.tick(2)
    answer(p, consult, target, "b2")
    p.tick(2)
    l1, l2 = p.local_pair("link@transfer")   # its own linkedid: neither call's
    p.enter("b1", l1, swap=a)
    p.enter("b2", l2, swap=consult)
    p.attended_transfer_ex(a, consult, trunk, target, dest_type="Link", orig_bridge="b1", second_bridge="b2",
                           local_one=l1, local_two=l2)
    p.unbridge("b1", a)
    p.unbridge("b2", consult)
    p.hangup(a)
    p.hangup(consult)
    p.tick(15)
    p.hangup_request(trunk)
    p.unbridge("b1", trunk)
    p.hangup(trunk)
    p.unbridge("b1", l1)
    p.hangup(l1)
    p.unbridge("b2", l2)
    p.hangup(l2)
    p.unbridge("b2", target)
    p.hangup_request(target, soft=True)
    p.hangup(target)
    [r] = records(p)
    assert r.complete and r.call_id == trunk.uniqueid
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "101", "104", "caller")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("attended", "101", "104")]


def test_attended_transfer_link_lists_each_leg_once():
    """Same shape; a merge of three channels from two calls must not copy the consult call's legs twice."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    answer(p, trunk, a, "b1")
    consult = p.channel("PJSIP/101", exten="104", context="from-internal", caller="101")
    target = ring(p, consult, "PJSIP/104")
    answer(p, consult, target, "b2")
    l1, l2 = p.local_pair("link@transfer")
    p.enter("b1", l1, swap=a)
    p.enter("b2", l2, swap=consult)
    p.attended_transfer_ex(a, consult, trunk, target, dest_type="Link", orig_bridge="b1", second_bridge="b2",
                           local_one=l1, local_two=l2)
    for ch, b in ((a, "b1"), (consult, "b2"), (trunk, "b1"), (l1, "b1"), (l2, "b2"), (target, "b2")):
        p.unbridge(b, ch)
        p.hangup(ch)
    [r] = records(p)
    assert sorted(rows(r)) == [("101", "answered"), ("104", "answered")]


def test_consultation_abandoned_keeps_the_call_with_101():
    """A phone's consultation that is not completed is its own call (its own linkedid, no shared bridge):
    101 stays in b1 throughout (hold is a re-INVITE, no bridge events)."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    answer(p, trunk, a, "b1")
    p.tick(3)
    consult = p.channel("PJSIP/101", exten="104", context="from-internal", caller="101")
    target = ring(p, consult, "PJSIP/104")
    p.tick(2)
    answer(p, consult, target, "b2")
    p.tick(2)
    bye(p, consult, "b2", target)          # 101 ends the consultation
    p.tick(10)
    bye(p, trunk, "b1", a)
    first, second = sorted(records(p), key=lambda r: r.started_at)
    assert (first.call_id, first.final_agent, first.hangup_by, first.transfers) == \
        (trunk.uniqueid, "101", "caller", ())
    assert (second.direction, second.answered_by, second.hangup_by) == ("internal", "104", "caller")


# ------------------------------------------------------------------ pickup

def _pickup_scenario(p: Pbx):
    trunk = inbound(p)
    ringing = ring(p, trunk, "PJSIP/101")
    p.tick(4)
    picker = p.channel("PJSIP/102", exten="*8", context="from-internal", caller="102")
    p.exten(picker, "Pickup", "")
    p.answer(picker)                       # ast_answer(chan) before the move [PU]
    old_picker = Pbx._snap(picker)
    old_target = Pbx._snap(ringing)
    p.rename(ringing, ringing.name + "<ZOMBIE>")   # masquerade: the target's identity becomes the zombie
    # Pickup with the pre-move snapshots [PU]
    p._emit("Pickup", **old_picker, **{("Target" + k): v for k, v in old_target.items()})
    p.hangup(ringing, cause=26)            # the zombie goes away
    p.dial_end(trunk, picker, "ANSWER")    # Dial() sees the answer, now from the picker's identity
    p.answer(trunk)
    p.bridge("b1", picker, trunk)
    p.set_linkedid(picker, trunk.linkedid)  # oldest linkedid wins in the bridge [BR]
    p.tick(6)
    bye(p, picker, "b1", trunk)
    return trunk


def test_group_pickup_as_asterisk_masquerades_it():
    p = Pbx()
    trunk = _pickup_scenario(p)
    [r] = records(p)
    assert r.call_id == trunk.uniqueid and r.complete
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "102", "102", "agent")
    assert sorted(rows(r)) == [("101", "answered-elsewhere"), ("102", "answered")]


def test_group_pickup_live_facts_end_101_and_answer_102():
    p = Pbx()
    _pickup_scenario(p)
    fs = facts(p)
    assert [(type(f).__name__, f.agent) for f in fs if isinstance(f, (AgentRinging, AgentAnswered, AgentEnded))
            and f.agent == "101"] == [("AgentRinging", "101"), ("AgentEnded", "101")]
    assert any(isinstance(f, AgentAnswered) and f.agent == "102" for f in fs)


# ------------------------------------------------------------------ queues

def test_queue_ringall_two_pjsip_members_one_answers():
    """Queue(retail) on the trunk, strategy ringall [Q]: AgentCalled+DialBegin per member, the winner's
    ANSWER, the loser's CANCEL, QueueCallerLeave, AgentConnect; AgentComplete after the hangup."""
    p = Pbx()
    trunk = inbound(p)
    p.answer(trunk)
    p.queue_join(trunk, "retail")
    m1 = p.channel("PJSIP/120", caller=trunk.caller_num, linked_to=trunk)
    m2 = p.channel("PJSIP/121", caller=trunk.caller_num, linked_to=trunk)
    for m in (m1, m2):
        p.agent_event("AgentCalled", trunk, m, "retail", m.name.split("-")[0])
        p.dial_begin(trunk, m)
        p.set_state(m, "Ringing")
    p.tick(6)
    p.answer(m2)
    p.dial_end(trunk, m1, "CANCEL")        # the loser's CANCEL can come first (recordings README)
    p.dial_end(trunk, m2, "ANSWER")
    p.hangup(m1, cause=26)
    p.queue_leave(trunk, "retail")
    p.agent_event("AgentConnect", trunk, m2, "retail", "PJSIP/121", RingTime="6", HoldTime="6")
    p.bridge("b1", m2, trunk)
    p.tick(40)
    bye(p, m2, "b1", trunk)
    p.agent_event("AgentComplete", trunk, m2, "retail", "PJSIP/121", Reason="agent", TalkTime="40")
    [r] = records(p)
    assert (r.queue, r.outcome, r.answered_by, r.final_agent, r.hangup_by) == \
        ("retail", "answered", "121", "121", "agent")
    assert sorted(rows(r)) == [("120", "answered-elsewhere"), ("121", "answered")]
    assert r.ring_seconds == 6.0 and r.talk_seconds == 40.0 and r.complete


def test_queue_member_behind_a_local_channel_optimized_away():
    """Member interface Local/120@agents/n [Q][LO]: the queue dials Local;1, ;2 dials PJSIP/120; after the
    answer PJSIP/120 swaps into the caller's bridge and the Local pair hangs up."""
    p = Pbx()
    trunk = inbound(p)
    p.queue_join(trunk, "retail")
    l1, l2 = p.local_pair("120@agents", linked_to=trunk)
    p.dial_begin(trunk, l1)
    phone = ring(p, l2, "PJSIP/120")
    p.tick(5)
    answer(p, l2, phone, "b2")
    p.answer(l1)
    p.dial_end(trunk, l1, "ANSWER")
    p.answer(trunk)
    p.queue_leave(trunk, "retail")
    p.bridge("b1", l1, trunk)
    p.local_optimization_begin(l1, l2)
    p.unbridge("b2", phone)
    p.enter("b1", phone, swap=l1)
    p.unbridge("b1", l1)
    p.local_optimization_end(l1, l2, True)
    p.unbridge("b2", l2)
    p.hangup(l1)
    p.hangup(l2)
    p.tick(30)
    bye(p, trunk, "b1", phone)
    [r] = records(p)
    assert (r.queue, r.outcome, r.answered_by, r.final_agent, r.hangup_by) == \
        ("retail", "answered", "120", "120", "caller")
    assert rows(r) == [("120", "answered")]
    assert r.ring_seconds == 5.0 and r.talk_seconds == 30.0 and r.complete


def test_queue_member_leg_via_local_channel_is_marked_with_the_queue():
    p = Pbx()
    trunk = inbound(p)
    p.queue_join(trunk, "retail")
    l1, l2 = p.local_pair("120@agents", linked_to=trunk)
    p.dial_begin(trunk, l1)
    phone = ring(p, l2, "PJSIP/120")
    p.tick(15)
    p.dial_end(l2, phone, "NOANSWER")
    p.hangup(phone, cause=0)
    p.dial_end(trunk, l1, "NOANSWER")
    p.hangup(l2)
    p.hangup(l1)
    p.hangup_request(trunk)
    p.hangup(trunk)
    [r] = records(p)
    assert [(leg.agent, leg.queue) for leg in r.legs] == [("120", "retail")]


# ------------------------------------------------------------------ blind transfer, AGI, voicemail

def test_blind_transfer_to_an_outside_number_then_the_caller_hangs_up():
    """101's phone REFERs the caller to 89161234567 [BlindTransfer IsExternal=Yes, as in the
    blind_transfer recording]; the caller runs the dialplan again and Dial()s the trunk; at the end the
    client hangs up."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    p.tick(2)
    answer(p, trunk, a, "b1")
    p.tick(10)
    p.blind_transfer_ex(a, trunk, "89161234567", "b1")
    p.unbridge("b1", a)
    p.hangup_request(a)                      # the phone's BYE after the NOTIFY
    p.hangup(a)
    p.unbridge("b1", trunk)
    out = p.channel("PJSIP/provider", exten="89161234567", caller=trunk.caller_num, linked_to=trunk)
    p.dial_begin(trunk, out, "PJSIP/89161234567@provider")
    p.tick(4)
    p.answer(out)
    p.dial_end(trunk, out, "ANSWER")
    p.bridge("b2", out, trunk)
    p.tick(60)
    bye(p, trunk, "b2", out)                 # the client hangs up
    [r] = records(p)
    assert (r.direction, r.outcome, r.answered_by) == ("in", "answered", "101")
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("blind", "101", "89161234567")]
    assert r.hangup_by == "caller"
    assert r.complete


def test_caller_hangs_up_during_the_agi_before_any_dial():
    p = Pbx()
    trunk = inbound(p)
    p.exten(trunk, "AGI", "agi://callrouter:4573/route")
    p.tick(0.3)
    p.hangup_request(trunk)
    p.hangup(trunk)
    [r] = records(p)
    assert (r.direction, r.outcome, r.hangup_by, r.answered_by, r.legs) == ("in", "abandoned", "caller", None, ())
    assert r.duration_seconds == 0.3 and r.complete


def test_unanswered_call_goes_to_voicemail_and_is_missed_not_abandoned():
    """Dial(PJSIP/101,20) -> NOANSWER, then VoiceMail(101) answers the caller [VM]; the client leaves a
    message and hangs up: the PBX gave up ringing -> missed; the caller ended the call."""
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    p.tick(20)
    p.dial_end(trunk, a, "NOANSWER")
    p.hangup(a, cause=0)
    p.exten(trunk, "VoiceMail", "101@default,u")
    p.answer(trunk)
    p.tick(25)
    p.hangup_request(trunk)
    p.hangup(trunk)
    [r] = records(p)
    assert rows(r) == [("101", "no-answer")]
    assert (r.outcome, r.hangup_by, r.answered_by) == ("missed", "caller", None)


# ------------------------------------------------------------------ ring group via Local, chan_sip

def test_ring_group_local_channels_winner_optimized_away():
    p = Pbx()
    trunk = inbound(p)
    la1, la2 = p.local_pair("101@phones", linked_to=trunk)
    lb1, lb2 = p.local_pair("102@phones", linked_to=trunk)
    p.dial_begin(trunk, la1)
    p.dial_begin(trunk, lb1)
    pa = ring(p, la2, "PJSIP/101")
    pb = ring(p, lb2, "PJSIP/102")
    p.tick(3)
    answer(p, lb2, pb, "b2")
    p.answer(lb1)
    p.dial_end(trunk, la1, "CANCEL")
    p.dial_end(trunk, lb1, "ANSWER")
    p.dial_end(la2, pa, "CANCEL")
    p.hangup(pa, cause=26)
    p.hangup(la2, cause=26)
    p.hangup(la1, cause=26)
    p.answer(trunk)
    p.bridge("b1", lb1, trunk)
    p.local_optimization_begin(lb1, lb2)
    p.unbridge("b2", pb)
    p.enter("b1", pb, swap=lb1)
    p.unbridge("b1", lb1)
    p.local_optimization_end(lb1, lb2, True)
    p.unbridge("b2", lb2)
    p.hangup(lb1)
    p.hangup(lb2)
    p.tick(12)
    bye(p, pb, "b1", trunk)
    [r] = records(p)
    assert sorted(rows(r)) == [("101", "answered-elsewhere"), ("102", "answered")]
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "102", "102", "agent")
    assert r.ring_seconds == 3.0 and r.talk_seconds == 12.0 and r.complete


def test_chan_sip_names_without_timestamps():
    """chan_sip (Asterisk 13-18): SIP/<peer>-<8 hex>; timestampevents=no."""
    p = Pbx(timestamps=False)
    trunk = inbound(p, tech="SIP")
    a = ring(p, trunk, "SIP/101")
    b = ring(p, trunk, "SIP/102")
    answer(p, trunk, a, "b1")
    p.dial_end(trunk, b, "CANCEL")
    p.hangup(b, cause=26)
    bye(p, trunk, "b1", a)
    [r] = records(p)
    assert a.name.startswith("SIP/101-") and len(a.name.split("-")[1]) == 8
    assert sorted(rows(r)) == [("101", "answered"), ("102", "answered-elsewhere")]
    assert (r.outcome, r.answered_by, r.hangup_by, r.complete) == ("answered", "101", "caller", True)
    assert r.started_at is None and r.ring_seconds is None and r.talk_seconds is None


def test_bridges_of_finished_calls_are_forgotten_even_without_bridge_leave():
    from callrouter.ami.events import StreamGap
    p = Pbx()
    trunk = inbound(p)
    a = ring(p, trunk, "PJSIP/101")
    answer(p, trunk, a, "b1")
    tr = Tracker()
    for f in p.frames:
        tr.feed(parse_event(f, None))
    tr.feed(StreamGap(p.t, "AMI connection lost"))
    p.frames.clear()
    p.hangup(trunk)          # the BridgeLeaves were lost in the outage
    p.hangup(a)
    for f in p.frames:
        tr.feed(parse_event(f, None))
    assert tr.calls_in_flight == 0 and tr._bridges == {}


def test_without_timestamps_an_earlier_cancelled_dial_is_not_answered_elsewhere():
    """Stream order decides: 101's Dial was cancelled before 102 was even dialed, so 102
    answering later does not make 101's ring 'answered elsewhere'."""
    p = Pbx(timestamps=False)
    trunk = p.channel("PJSIP/provider", exten="5550100", context="from-pstn", caller="+79161234567")
    first = p.channel("PJSIP/101", linked_to=trunk)
    p.dial_begin(trunk, first)
    p.dial_end(trunk, first, "CANCEL")
    p.hangup(first, cause=0)
    second = p.channel("PJSIP/102", linked_to=trunk)
    p.dial_begin(trunk, second)
    p.answer(second)
    p.dial_end(trunk, second, "ANSWER")
    p.bridge("b1", trunk, second)
    p.hangup_request(second)
    p.hangup(second)
    p.hangup(trunk)
    [r] = replay([parse_event(f, None) for f in p.frames])
    assert [(leg.agent, leg.result) for leg in r.legs] == [("101", "cancelled"), ("102", "answered")]


def test_parked_call_retrieved_by_a_colleague():
    """res_parking: 101 blind-transfers the caller to the parking extension (the caller waits
    alone in the lot's holding bridge) and hangs up; 102 dials the slot on a call of its own
    (own linkedid) and ParkedCall() bridges it with the caller. One call: 101 answered it,
    102 held it at the end."""
    p = Pbx()
    trunk = p.channel("PJSIP/provider", exten="5550100", context="from-pstn", caller="+79161234567")
    first = p.channel("PJSIP/101", linked_to=trunk)
    p.dial_begin(trunk, first)
    p.tick(2)
    p.answer(first)
    p.dial_end(trunk, first, "ANSWER")
    p.answer(trunk)
    p.bridge("b1", first, trunk)
    p.tick(10)
    p.blind_transfer(first, trunk, "700", "b1")
    p.unbridge("b1", first, trunk)
    p.hangup(first)
    p.bridge("parking-lot-default", trunk)
    p.tick(30)
    retriever = p.channel("PJSIP/102", exten="701", context="from-internal", caller="102")
    p.answer(retriever)
    p.unbridge("parking-lot-default", trunk)
    p.bridge("b3", retriever, trunk)
    p.tick(20)
    p.hangup_request(trunk)  # the client hangs up
    p.unbridge("b3", trunk, retriever)
    p.hangup(trunk)
    p.hangup_request(retriever, soft=True)
    p.hangup(retriever)
    [r] = replay([parse_event(f, None) for f in p.frames])
    assert (r.outcome, r.answered_by, r.final_agent, r.hangup_by) == ("answered", "101", "102", "caller")
    assert [(leg.agent, leg.result) for leg in r.legs] == [("101", "answered"), ("102", "answered")]
    assert [(t.kind, t.from_, t.to) for t in r.transfers] == [("blind", "101", "700")]
    assert r.complete and r.call_id == trunk.uniqueid
