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


class _View:
    """Read-only helpers over one finished call."""

    def __init__(self, call: CallState, channels: dict[str, ChannelState], devices: DeviceMap):
        self.call = call
        self.ch = {uid: channels[uid] for uid in call.channels if uid in channels}
        self.devices = devices
        self.root = self.ch[call.key]
        peer = self.root.local_peer
        # the outer half of a Local channel is the outside world; its twin runs the dialplan
        self.dialplan = self.ch.get(peer) if peer and self.root.name.endswith(";1") and peer in self.ch else self.root
        self.caller_side = {self.root.uniqueid, self.dialplan.uniqueid}

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

    def agent(self, uid: str) -> str | None:
        c = self.ch.get(uid)
        return self.devices.agent_of(c.name) if c else None

    def first_signal(self, uids) -> Signal | None:
        sigs = [self.ch[u].first_signal for u in uids if u in self.ch and self.ch[u].first_signal]
        return min(sigs, key=lambda s: s.seq, default=None)


def _leg_result(v: _View, leg: LegState, answered: list[LegState], caller_gave_up: bool) -> str:
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


def build_record(call: CallState, channels: dict[str, ChannelState], devices: DeviceMap,
                 pbx: str, region: str) -> CallRecord:
    v = _View(call, channels, devices)
    root = v.root
    legs = [leg for leg in call.legs if v.is_endpoint(leg)]
    agent_legs = [leg for leg in legs if v.agent(leg.dest) is not None]
    outside_legs = [leg for leg in legs if v.agent(leg.dest) is None]
    root_agent = devices.agent_of(root.name)

    if root_agent is None:
        direction = "in"
    else:
        direction = "out" if outside_legs else "internal"

    # who answered: for the manager's own outbound call it is the far end
    answer_pool = outside_legs if direction == "out" else legs
    answered = sorted((leg for leg in answer_pool
                       if leg.answered_seq is not None or (leg.status is None and
                                                           v.ch.get(leg.dest) and v.ch[leg.dest].up)),
                      key=lambda leg: leg.answered_seq if leg.answered_seq is not None else leg.began_seq)
    first = answered[0] if answered else None
    answered_at = None
    if first is not None:
        answered_at = first.answered_at if first.answered_at is not None else v.ch[first.dest].up_at

    # how it ended: the first hangup signal on the caller's side vs on the answering agent's side
    holder = call.holder if call.holder in v.ch else (first.dest if first else None)
    agent_side = {holder, v.twin(holder)} - {None} if holder else set()
    if direction == "out":
        caller_side, agent_side = agent_side, v.caller_side  # the manager placed the call
    else:
        caller_side = v.caller_side
    cs = v.first_signal(caller_side)
    ag = v.first_signal(agent_side)
    caller_first = cs is not None and (ag is None or cs.seq < ag.seq)
    # a soft request on the channel running the dialplan is Asterisk ending it, not the caller
    caller_gave_up = caller_first and _by_outside(v, cs, caller_side, direction)
    if caller_gave_up and first is None and direction == "in" and _pbx_gave_up(v, legs, cs):
        caller_gave_up = False  # e.g. rang out, then voicemail: missed, though the caller ended the call
        pbx_gave_up = True
    else:
        pbx_gave_up = False

    all_answered = [leg for leg in legs if leg.answered_seq is not None]
    leg_rows = []
    for leg in legs:
        result = _leg_result(v, leg, all_answered, caller_gave_up and first is None)
        queue = v.queue_of(leg.dialer)
        ring_end = leg.answered_at if leg.answered_at is not None else leg.ended_at
        if ring_end is None and leg.dest in v.ch:
            ring_end = v.ch[leg.dest].hangup_at
        leg_rows.append(Leg(agent=v.agent(leg.dest), device=leg.device, ring_seconds=_secs(leg.began_at, ring_end),
                            result=result, queue=queue or None))

    started = root.created_at
    ended = max((c.hangup_at for c in v.ch.values() if c.hangup_at is not None), default=None)

    if first is not None:
        outcome = "answered"
        if caller_first:
            hangup_by = "caller" if caller_gave_up else "system"
        else:
            hangup_by = "agent" if ag is not None else None
    else:
        results = {r.result for r in leg_rows}
        if direction == "out":
            outcome = "busy" if "busy" in results else "failed" if results == {"unavailable"} else "no-answer"
            hangup_by = "agent" if ag is not None and not caller_first else "system"
        elif caller_gave_up:
            outcome, hangup_by = "abandoned", "caller"
        elif pbx_gave_up:
            results = {r.result for r in leg_rows}
            outcome = "busy" if results == {"busy"} else "failed" if results == {"unavailable"} else "missed"
            hangup_by = "caller"
        else:
            if leg_rows and results == {"busy"}:
                outcome = "busy"
            elif leg_rows and results == {"unavailable"}:
                outcome = "failed"
            else:
                outcome = "missed"
            hangup_by = "system"

    answered_by = v.agent(first.dest) if first is not None and direction != "out" else None
    final_agent = v.agent(holder) if holder else None
    if direction == "out":
        final_agent = root_agent
    elif final_agent is None:
        final_agent = answered_by

    caller, callee = _parties(v, direction, root_agent, outside_legs, agent_legs, region)
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
             agent_legs: list[LegState], region: str) -> tuple[Party, Party]:
    root = v.root
    raw = _clean(root.caller_num) or _clean(v.dialplan.caller_num)
    name = _clean(root.caller_name) or _clean(v.dialplan.caller_name)
    if direction == "in":
        did = _clean(root.exten) or _clean(v.dialplan.exten)
        did = None if did == "s" else did
        return (Party(number=normalize(raw, region), raw=raw, name=name),
                Party(number=normalize(did, region), raw=did, name=None))
    me = Party(number=None, raw=raw or root_agent, name=name)
    if direction == "out":
        leg = next((leg for leg in outside_legs if leg.answered_seq is not None), outside_legs[0])
        dest = v.ch.get(leg.dest)
        res = DeviceMap.device_of(dest.name).partition("/")[2].split("@", 1)[0] if dest else ""
        number = next((x for x in (res, leg.dial_exten, dest.caller_num if dest else "")
                       if x and normalize(x, region)), None) or leg.dial_exten or res or None
        return me, Party(number=normalize(number, region), raw=number, name=None)
    other = v.agent(agent_legs[0].dest) if agent_legs else _clean(root.exten)
    return me, Party(number=None, raw=other, name=None)
