"""Turning a finished call's state into its CallRecord (pure).

Roles: the *root* is the call's first channel (the trunk channel of an inbound call, the
manager's phone of an outbound one). The *dialplan channel* is the one that runs the
inbound dialplan: the root itself, or — when the root is the outer half of a Local
channel — its twin. An *endpoint leg* is a Dial() whose destination does not go on to
dial or queue by itself; only those are legs in the record (a Dial to `Local/retail@queues`
is plumbing, the queue members it rings are the legs).
"""
from __future__ import annotations

from datetime import datetime, timezone

from callrouter.devices import DeviceMap
from callrouter.phone import normalize
from callrouter.records import CallRecord, Leg, Party, RouteInfo

from .state import CallState, ChannelState, LegState, Signal

_BUSYISH = {"BUSY", "CONGESTION"}
_UNAVAILABLE = {"CONGESTION", "CHANUNAVAIL", "INVALIDARGS", "DONTCALL", "TORTURE"}
# Q.850 causes for a leg that has no DialEnd (missed events): what its hangup says
_CAUSE_BUSY = {17, 21}
_CAUSE_UNAVAILABLE = {1, 3, 20, 27, 34, 38, 41, 42}
_ELSEWHERE_WINDOW = 1.0  # s: a CANCEL this close to another leg's ANSWER lost the race, it was not a miss


def leg_result_of_status(status: str | None, answered: bool = False) -> str | None:
    if answered or status == "ANSWER":
        return "answered"
    if status is None:
        return None
    if status == "NOANSWER":
        return "no-answer"
    if status == "BUSY":
        return "busy"
    if status in _UNAVAILABLE:
        return "unavailable"
    if status == "PICKUP":
        return "answered-elsewhere"
    if status == "CANCEL":
        return "cancelled"
    return "no-answer"


def wall_clock(t: float | None) -> datetime | None:
    # relative capture times (seconds since the capture began) are not wall-clock times
    return datetime.fromtimestamp(t, tz=timezone.utc) if t is not None and t > 1e9 else None


def _secs(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(max(0.0, b - a), 3)


def _clean(v: str) -> str | None:
    v = (v or "").strip()
    return None if not v or v == "<unknown>" else v


# caller IDs that say the number is withheld (chan_sip/PJSIP "anonymous", ISDN restricted...)
_WITHHELD = {"anonymous", "restricted", "unknown", "unavailable", "private", "withheld"}


def _number(v: str) -> str | None:
    v = _clean(v)
    return None if v is None or v.lower() in _WITHHELD else v


_ROUTED = ("ROUTE_DIAL", "AGISTATUS", "CLIENT_ID", "ROUTE_REASON")


def is_phone_number(x: str | None, region: str) -> bool:
    return bool(x) and normalize(x, region) is not None


def dialed_number(leg: LegState, dest: ChannelState | None, region: str) -> str | None:
    """The number a leg dialed when it is a phone number: the Local/channel resource
    (`Local/+31612345678@followme`), the number in the dial string (`89161234567@provider`,
    `provider/89161234567`), or the dialplan exten the dialer ran when it dialed."""
    cands = [DeviceMap.resource_of(dest.name) if dest else None]
    ds = leg.dial_string or ""
    cands += [part.split("@", 1)[0] for part in ds.replace("/", "@@").split("@@")]
    cands.append(leg.dial_exten)
    return next((c for c in cands if is_phone_number(c, region)), None)


def party_name(ch: ChannelState, devices: DeviceMap, foreign: set[str], region: str = "") -> str | None:
    """Who a channel is, on any device naming (docs/design.md, call record): the configured
    manager of its device; else its own caller ID number (app_dial.c "Determine CallerID to
    store in outgoing channel": the driver's preset one, e.g. chan_sip's peer callerid `202`,
    or the dialplan exten Dial ran; NewCallerid updates it) unless that number is another
    party's (the caller's, the DID, the dialer's, its connected line); else the channel
    name's resource."""
    m = devices.manager_of(ch.name)
    if m is not None:
        return m
    num = _number(ch.own_num)
    if num is not None and num != _clean(ch.connected_num) and num not in foreign and \
            not (region and normalize(num, region) in foreign):
        return num
    return DeviceMap.resource_of(ch.name)


class _View:
    """Read-only helpers over one call (finished, or live for the facts)."""

    def __init__(self, call: CallState, channels: dict[str, ChannelState], devices: DeviceMap, region: str):
        self.call = call
        self.region = region
        self.ch = {uid: channels[uid] for uid in call.channels if uid in channels}
        self.devices = devices
        self.root = self.ch[call.key]
        peer = self.root.local_peer
        # the outer half of a Local channel is the outside world; its twin runs the dialplan
        self.dialplan = self.ch.get(peer) if peer and self.root.name.endswith(";1") and peer in self.ch else self.root
        self.caller_side = {self.root.uniqueid, self.dialplan.uniqueid}
        self.direction = self._direction()
        caller_nums = {_clean(c.own_num) for c in (self.root, self.dialplan)}
        caller_nums |= {_clean(c.caller_num) for c in (self.root, self.dialplan)}
        if self.direction == "in":  # the number the caller dialed names no agent
            caller_nums |= {_clean(c.exten) for c in (self.root, self.dialplan)}
        self.foreign = (caller_nums | {"s"}) - {None}  # `s`: the dialplan's start exten, no one's number

    # ---- roles

    def _ours_dialed(self) -> str:
        """The root is our side: it placed a call out (dialed a phone number) or internally."""
        for leg in self.call.legs:
            dest = self.ch.get(leg.dest)
            if dest is not None and self.devices.manager_of(dest.name) is None and \
                    dialed_number(leg, dest, self.region) is not None:
                return "out"
        if not self.call.legs and self.root.originated:
            return "out"  # click-to-dial whose manager never took the call: the client was next
        return "internal"

    def _direction(self) -> str:
        root, rv = self.root, self.call.route_vars
        if any(rv.get(k) for k in _ROUTED):
            return "in"  # the inbound router was asked (FastAGI): a call from outside
        if self.devices.manager_of(root.name) is not None:
            return self._ours_dialed()
        if root.originated and self._ours_dialed() == "out":
            return "out"  # Originate rang our phone first, then it dialed a client [pbx.c originate]
        num = _number(root.own_num) or _number(root.caller_num) or _number(self.dialplan.caller_num)
        if num is None or is_phone_number(num, self.region):
            return "in"   # an outside number, or none at all (withheld: no phone of ours does that)
        return self._ours_dialed()

    def twin(self, uid: str) -> str | None:
        return self.ch[uid].local_peer if uid in self.ch else None

    def is_endpoint(self, leg: LegState) -> bool:
        dest = self.ch.get(leg.dest)
        if dest is None:
            return True
        for uid in (dest.uniqueid, dest.local_peer):
            c = self.ch.get(uid) if uid else None
            if c is not None and (c.dials or c.queue):
                return False
        return True

    def queue_of(self, uid: str, depth: int = 0) -> str | None:
        """The queue a dialer dials for: its own, or (a Local ;2 dialing a member) the one that
        dialed its ;1 twin."""
        c = self.ch.get(uid)
        if c is None or depth > 4:
            return None
        if c.queue:
            return c.queue
        if c.local_peer:
            for leg in self.call.legs:
                if leg.dest == c.local_peer:
                    return self.queue_of(leg.dialer, depth + 1)
        return None

    def name(self, uid: str | None, dialer: str | None = None) -> str | None:
        c = self.ch.get(uid) if uid else None
        if c is None:
            return None
        foreign = set(self.foreign)
        if uid in self.caller_side:
            # our own phone placing the call: an Originate may have set its caller ID to the
            # client's number (what the manager's phone displays), which names the client
            foreign = {x for leg in self.call.legs
                       for x in (dialed_number(leg, self.ch.get(leg.dest), self.region),) if x}
        if dialer is None:  # a leg's destination: what Dial set on it came from its dialer
            dialer = next((leg.dialer for leg in self.call.legs if leg.dest == uid), None)
        d = self.ch.get(dialer) if dialer else None
        if d is not None and d.uniqueid != uid:
            foreign |= {x for x in (_clean(d.own_num), _clean(d.connected_num)) if x}
        foreign |= {normalize(x, self.region) for x in foreign} - {None}
        return party_name(c, self.devices, foreign, self.region)

    def leg_name(self, leg: LegState) -> str | None:
        return self.name(leg.dest, leg.dialer)

    def first_signal(self, uids) -> Signal | None:
        sigs = [self.ch[u].first_signal for u in uids if u in self.ch and self.ch[u].first_signal]
        return min(sigs, key=lambda s: s.seq, default=None)

    def reaches_caller(self, uid: str) -> bool:
        """Did this channel's media ever reach the caller's side: through bridges it shared, and
        Local channel halves (a follow-me Local;2 bridged with the mobile reaches the caller only
        once its ;1 is bridged with the caller)?"""
        seen, todo = {uid}, [uid]
        while todo:
            c = self.ch.get(todo.pop())
            if c is None:
                continue
            for nxt in (*c.peers, c.local_peer):
                if nxt is None or nxt in seen:
                    continue
                if nxt in self.caller_side:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    def declined(self, leg: LegState, bridges_visible: bool) -> bool:
        """Answered, then hung up without its media ever reaching the caller: a confirmation step
        the callee declined or let time out (app_followme.c publishes DialEnd ANSWER before its
        "press 1" prompt; app_dial.c M()/U() run the screening after ANSWER) - not an answer."""
        if leg.answered_seq is None:
            return False
        chans = [self.ch.get(u) for u in (leg.dest, self.twin(leg.dest)) if u]
        chans = [c for c in chans if c is not None]
        if not chans or not all(c.hungup for c in chans) or self.reaches_caller(leg.dest):
            return False
        # never bridged is evidence only where the stream carries bridge events, or when the
        # dialer went on to ring someone else after this leg hung up (follow-me's next step)
        gone = max(c.first_signal.seq for c in chans if c.first_signal) if all(c.first_signal for c in chans) else None
        went_on = gone is not None and any(o.dialer == leg.dialer and o.began_seq > gone for o in self.call.legs)
        return bridges_visible or went_on


def _leg_result(v: _View, leg: LegState, answered: list[LegState], caller_gave_up: bool,
                declined: bool) -> str:
    if declined:
        return "no-answer"
    result = leg_result_of_status(leg.status, answered=leg.answered_seq is not None)
    if result is None:  # no DialEnd: the destination channel's fate tells
        dest = v.ch.get(leg.dest)
        if dest is not None and dest.up:
            result = "answered"
        elif dest is not None and dest.cause in _CAUSE_BUSY:
            result = "busy"
        elif dest is not None and dest.cause in _CAUSE_UNAVAILABLE:
            result = "unavailable"
        else:
            result = "cancelled" if caller_gave_up else "no-answer"
    if result == "cancelled" and any(_won_while_ringing(other, leg) for other in answered if other is not leg):
        return "answered-elsewhere"
    return result


def _won_while_ringing(winner: LegState, leg: LegState) -> bool:
    """Did `winner` answer while `leg` rang (so `leg` was cancelled because of it)? By stream
    order: the two rang together. With times, the answer may trail the CANCEL a little
    (Asterisk cancels the losers before it reports the winner)."""
    if winner.answered_seq is None or winner.answered_seq < leg.began_seq:
        return False
    if leg.ended_seq is not None and winner.began_seq > leg.ended_seq:
        return False  # it rang only after this leg was over: a later, separate attempt
    if winner.answered_at is not None and leg.ended_at is not None:
        return winner.answered_at - leg.ended_at <= _ELSEWHERE_WINDOW
    return True


def _side_end(v: _View, side: set[str]) -> tuple[int, int | None] | None:
    """When a side was first gone from the call: its earliest BridgeLeave or Hangup, by stream
    order, with that channel's hangup cause."""
    best = None
    for uid in side:
        c = v.ch.get(uid)
        if c is None:
            continue
        for seq in (c.left_seq, c.first_signal.seq if c.first_signal else None):
            if seq is not None and (best is None or seq < best[0]):
                best = (seq, c.cause)
    return best


def build_record(call: CallState, channels: dict[str, ChannelState], devices: DeviceMap,
                 pbx: str, region: str, *, requests_visible: bool = True,
                 bridges_visible: bool = True, varsets_visible: bool = True) -> CallRecord:
    """`requests_visible`: the stream carries HangupRequest/SoftHangupRequest (an AMI user's
    eventfilter or an old version may drop them); `bridges_visible`: it carries BridgeEnter;
    `varsets_visible`: it carries VarSet."""
    v = _View(call, channels, devices, region)
    root = v.root
    direction = v.direction
    legs = [leg for leg in call.legs if v.is_endpoint(leg)]
    declined = {id(leg) for leg in legs if v.declined(leg, bridges_visible)}
    outside_legs = legs if direction == "out" else []
    root_agent = v.name(root.uniqueid) if direction != "in" else None

    def took_it(leg: LegState) -> bool:
        if id(leg) in declined:
            return False
        if leg.answered_seq is not None:
            return True
        return leg.status is None and v.ch.get(leg.dest) is not None and v.ch[leg.dest].up

    answered = sorted((leg for leg in legs if took_it(leg)),
                      key=lambda leg: leg.answered_seq if leg.answered_seq is not None else leg.began_seq)
    first = answered[0] if answered else None
    answered_at = None
    if first is not None:
        answered_at = first.answered_at if first.answered_at is not None else v.ch[first.dest].up_at

    # the two sides: the caller's (the client on inbound) and ours (the answering/holding agent)
    holder = call.holder if call.holder in v.ch and (first is not None or v.reaches_caller(call.holder)) \
        else (first.dest if first else None)
    agent_side = {holder, v.twin(holder)} - {None} if holder else set()
    if direction == "out":
        caller_side, agent_side = agent_side, v.caller_side  # the manager placed the call
    else:
        caller_side = v.caller_side
    cs = v.first_signal(caller_side)
    ag = v.first_signal(agent_side)
    caller_first = cs is not None and (ag is None or cs.seq < ag.seq)

    all_answered = [leg for leg in legs if leg.answered_seq is not None and id(leg) not in declined]
    leg_rows = []
    for leg in legs:
        result = _leg_result(v, leg, all_answered, first is None and caller_first, id(leg) in declined)
        queue = v.queue_of(leg.dialer)
        ring_end = leg.answered_at if leg.answered_at is not None else leg.ended_at
        if ring_end is None and leg.dest in v.ch:
            ring_end = v.ch[leg.dest].hangup_at
        leg_rows.append(Leg(agent=v.leg_name(leg) if direction != "out" else None, device=leg.device,
                            ring_seconds=_secs(leg.began_at, ring_end), result=result, queue=queue or None))

    started = root.created_at
    ended = max((c.hangup_at for c in v.ch.values() if c.hangup_at is not None), default=None)
    if call.ended_unseen is not None:
        ended = None  # some hangups were never seen: the end is only known within bounds

    if first is not None:
        outcome = "answered"
        hangup_by = _answered_hangup_by(v, cs, ag, caller_first, caller_side, agent_side, direction,
                                        requests_visible)
    elif direction == "out":
        outcome, hangup_by = _outbound_unanswered(v, legs, leg_rows, requests_visible)
    else:
        outcome, hangup_by = _inbound_unanswered(v, legs, leg_rows, cs, requests_visible, varsets_visible)

    answered_by = v.leg_name(first) if first is not None and direction != "out" else None
    final_agent = v.name(holder) if holder and direction != "out" else None
    if direction == "out":
        final_agent = root_agent
    elif final_agent is None:
        final_agent = answered_by

    caller, callee = _parties(v, direction, root_agent, outside_legs, legs, region)
    rv = call.route_vars
    route = None
    if rv.get("ROUTE_DIAL") or rv.get("AGISTATUS", "").upper() == "SUCCESS" and rv.get("ROUTE_REASON"):
        route = RouteInfo(rule=rv.get("ROUTE_RULE") or None, reason=rv.get("ROUTE_REASON") or None,
                          dial=rv.get("ROUTE_DIAL") or None)
    gaps = list(dict.fromkeys(call.gaps))
    if any(not c.hungup for c in v.ch.values()) and not gaps:
        gaps.append("call still in progress")

    return CallRecord(
        pbx=pbx, call_id=root.first_linkedid,
        direction=direction, caller=caller, callee=callee,
        client_id=rv.get("CLIENT_ID") or None, route=route,
        started_at=wall_clock(started), answered_at=wall_clock(answered_at), ended_at=wall_clock(ended),
        ring_seconds=_secs(started, answered_at) if first is not None else _secs(started, ended),
        talk_seconds=_secs(answered_at, ended) if first is not None else (0.0 if ended is not None else None),
        duration_seconds=_secs(started, ended),
        outcome=outcome, hangup_by=hangup_by, answered_by=answered_by, final_agent=final_agent,
        queue=call.queue, legs=tuple(leg_rows), transfers=tuple(call.transfers),
        recording=call.recording, complete=not gaps, gaps=tuple(gaps),
        agent=root_agent if direction == "out" else None,
    )


def _answered_hangup_by(v: _View, cs: Signal | None, ag: Signal | None, caller_first: bool,
                        caller_side: set[str], agent_side: set[str], direction: str,
                        requests_visible: bool) -> str | None:
    if requests_visible:
        # HangupRequest = the channel's own side (a BYE, on-hook); SoftHangupRequest = Asterisk
        # (main/channel.c ast_softhangup; manager_channels.c publishes both)
        if caller_first:
            return "caller" if _by_outside(v, cs, caller_side, direction) else "system"
        return _by_agent(v, ag, agent_side) if ag is not None else None
    # No hangup requests in the stream: the side that left the bridge (or hung up) first ended
    # the call (bridge_channel.c: the hung-up channel leaves, then the basic bridge dissolves and
    # kicks the peer), when its cause is normal clearing (16, main/channel.c / causes.h).
    c_end, a_end = _side_end(v, caller_side), _side_end(v, agent_side)
    if c_end is None or a_end is None or c_end[0] == a_end[0]:
        return None
    first_end, who = (c_end, "caller") if c_end[0] < a_end[0] else (a_end, "agent")
    if first_end[1] != 16:
        return None
    return who


def _inbound_unanswered(v: _View, legs: list[LegState], rows: list[Leg], cs: Signal | None,
                        requests_visible: bool, varsets_visible: bool) -> tuple[str, str | None]:
    statuses = [leg.status for leg in legs]
    results = [r.result for r in rows]
    # Dial (app_dial.c wait_for_answer) and Queue report CANCEL to the legs when the caller hangs
    # up while they ring: the caller gave up
    cancelled_by_caller = any(r == "cancelled" for r in results)
    caller_end = cs is not None and _by_outside(v, cs, v.caller_side, "in") and (cs.request or not requests_visible)
    gave_up_early = caller_end and not _pbx_gave_up(v, legs, cs)
    if not requests_visible and varsets_visible and not gave_up_early:
        # no hangup requests to tell who ended it; the variables Asterisk sets do:
        # res_agi.c sets AGISTATUS=HANGUP when the caller hung up during the AGI; app_queue.c
        # sends QueueCallerAbandon for a caller who hung up *and* for a timeout, but only on a
        # timeout (or full/empty queue) does Queue() return and set QUEUESTATUS
        in_queue = [c for c in (v.root, v.dialplan) if c.queue]
        gave_up_early = (not legs and v.call.route_vars.get("AGISTATUS", "").upper() == "HANGUP") or \
            (bool(in_queue) and any(c.queue_abandoned for c in in_queue) and v.call.queue_status is None)
    if cancelled_by_caller or gave_up_early:
        return "abandoned", "caller"
    # the PBX gave up: ring timeout, busy, unreachable
    if legs and all(s in _BUSYISH for s in statuses):
        outcome = "busy"
    elif legs and all(r == "unavailable" for r in results):
        outcome = "failed"
    else:
        outcome = "missed"
    if cs is None:
        return outcome, None
    if cs.request and not cs.soft and _by_outside(v, cs, v.caller_side, "in"):
        return outcome, "caller"  # the caller hung up after the PBX gave up (e.g. in voicemail)
    if cs.soft or requests_visible:
        return outcome, "system"  # Asterisk ended it: a soft request, or a bare hangup of the dialplan
    return outcome, None


def _outbound_unanswered(v: _View, legs: list[LegState], rows: list[Leg],
                         requests_visible: bool) -> tuple[str, str | None]:
    statuses = [leg.status for leg in legs]
    if not legs:
        # Originate rang the manager first and the manager never took it (pbx.c originate:
        # the pseudo-dial ended without ANSWER): nobody was dialed
        outcome = "failed"
    elif all(s in _BUSYISH for s in statuses):
        outcome = "busy"   # the client rejected (486 Busy Here -> BUSY, app_dial.c)
    elif all(r.result == "unavailable" for r in rows):
        outcome = "failed"
    else:
        outcome = "no-answer"
    # our side is the root: the manager's phone
    ours = v.first_signal(v.caller_side)
    if ours is None:
        return outcome, None
    if ours.request and not ours.soft and (not legs or any(leg.status in (None, "CANCEL") for leg in legs)):
        return outcome, "agent"   # the manager hung up (or refused the Originate) while it rang
    if ours.soft or (requests_visible and not ours.request):
        return outcome, "system"  # Asterisk ended it: a soft request, or the dialplan's bare hangup
    return outcome, None          # no requests in the stream: who ended it is not known


def _pbx_gave_up(v: _View, legs: list[LegState], sig: Signal) -> bool:
    """Before the caller's hangup signal, every leg had ended by itself (no answer, busy,
    unavailable: not cancelled by the caller) and the caller was not waiting in a queue."""
    if not legs:
        return False  # nothing rang yet (hung up in the IVR/AGI): abandoned
    for leg in legs:
        if leg.ended_seq is None or leg.ended_seq > sig.seq or leg.status in (None, "CANCEL", "ANSWER"):
            return False
    for uid in v.caller_side:
        c = v.ch.get(uid)
        if c is not None and c.queue and (c.queue_left_seq is None or c.queue_left_seq > sig.seq):
            return False
    return True


def _by_agent(v: _View, sig: Signal, side: set[str]) -> str | None:
    """Who ended the call with this first signal on our side: the agent's own phone (a
    HangupRequest), Asterisk (a soft request on the channel running the dialplan, as on a
    click-to-dial call), or - a soft request on the agent's phone channel itself (an AMI
    Hangup, a Dial L() limit) - not the agent, and not known who."""
    if not sig.soft:
        return "agent"  # its own HangupRequest (or a bare Hangup with none before it)
    owner = next((u for u in side if u in v.ch and v.ch[u].first_signal is sig), None)
    if owner is None:
        return None
    if owner == v.dialplan.uniqueid:
        return "system"
    if v.ch[owner].name.startswith("Local/"):
        return "agent"  # the soft request a Local half gets when the phone behind it hung up
    return None


def _by_outside(v: _View, sig: Signal, side: set[str], direction: str) -> bool:
    """Was this hangup signal the outside party leaving (vs Asterisk ending the call)?"""
    if not sig.soft and sig.request:
        return True   # the channel driver said the far end hung up
    owner = next(u for u in side if u in v.ch and v.ch[u].first_signal is sig)
    if direction == "out":
        return True
    # soft request (or bare hangup) on the outer Local half: the outside hung up;
    # on the channel running the dialplan: Asterisk did
    return owner != v.dialplan.uniqueid


def _parties(v: _View, direction: str, root_agent: str | None, outside_legs: list[LegState],
             legs: list[LegState], region: str) -> tuple[Party, Party]:
    root = v.root
    raw = _clean(root.caller_num) or _clean(v.dialplan.caller_num)
    name = _clean(root.caller_name) or _clean(v.dialplan.caller_name)
    if direction == "in":
        did = _clean(root.exten) or _clean(v.dialplan.exten)
        did = None if did == "s" else did
        return (Party(number=normalize(raw, region), raw=raw, name=name),
                Party(number=normalize(did, region), raw=did, name=None))
    me = Party(number=None, raw=root_agent or raw, name=name)
    if direction == "out":
        if not outside_legs:  # nobody dialed yet (the manager never took an originated call)
            number = next((x for x in (_clean(root.last_exten), _clean(v.dialplan.last_exten))
                           if is_phone_number(x, region)), None)
            return me, Party(number=normalize(number, region), raw=number, name=None)
        leg = next((leg for leg in outside_legs if leg.answered_seq is not None), outside_legs[0])
        dest = v.ch.get(leg.dest)
        number = dialed_number(leg, dest, region) or leg.dial_exten or \
            (DeviceMap.resource_of(dest.name) if dest else None)
        return me, Party(number=normalize(number, region), raw=number, name=None)
    other = v.leg_name(legs[0]) if legs else _clean(root.exten)
    return me, Party(number=None, raw=other, name=None)
