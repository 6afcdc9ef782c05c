"""Call shapes of real Asterisk 13-22 traffic the lab recordings lack, played by the scripted PBX
(transfers through Local channels, Local optimization that succeeds, queues with several members, chan_sip
names, captures without timestamps).

Each test cites where its event order comes from. Sources:
[AT]  docs.asterisk.org .../AMI_Events/AttendedTransfer (Orig/Second transferer, DestType Bridge|App|Link|Threeway)
[BR]  asterisk main/bridge.c: two_bridge_attended_transfer / bridge_swap_attended_transfer (a 2+2 party
      transfer *swaps* one channel into the other bridge: BridgeEnter with SwapUniqueid) and
      bridge_channel_update_linkedids (every channel pushed into a bridge takes the OLDEST linkedid of
      its members, the swapped-out channel excluded)
[BB]  asterisk main/bridge_basic.c: DTMF atxfer dials the target through a Local channel requested by the
      transferer (same linkedid), publish_transfer_success() passes the transferer as both Orig and Second
      transferer, after bridge_merge()
[LO]  docs AMI_Events/LocalOptimizationBegin/End + the recordings' ring_group/queue captures: the real
      channel is swapped into the outer bridge (BridgeEnter SwapUniqueid=<;1>), then the Local pair hangs up
[Q]   docs AMI_Events QueueCallerJoin/AgentCalled/AgentConnect/AgentComplete/AgentRingNoAnswer(ms);
      app_queue publishes DialBegin/DialEnd with the queue caller as Channel
"""
from callrouter.ami.events import parse_event
from callrouter.tracker import replay

from pbxsim import Pbx


def records(p: Pbx):
    return replay([parse_event(f, None) for f in p.frames])


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


# ------------------------------------------------------------------ AGI

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
