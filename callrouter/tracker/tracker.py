"""The call tracker: a pure reducer from typed AMI events to call facts.

No IO and no clock: time comes with the events. Feed it events in stream order with
`feed`; it returns the facts each event produced (agent ringing/answered/ended, and a
`CallFinished` with the call record when the last channel of a call hangs up).

How channels become one call: they share a linkedid, or one dialed the other, or they
are two halves of a Local channel, or they met in a bridge, a transfer or a pickup.
Linkedids change on transfers and pickups, so the linkedid alone is never trusted:
any of those links merges the two calls into the older one.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone

from callrouter.ami import events as ev
from callrouter.devices import DeviceMap
from callrouter.phone import DEFAULT_REGION, normalize
from callrouter.records import CallRecord, Party, Transfer

from .facts import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Fact, LiveCall
from .record import _View, build_record, leg_result_of_status, wall_clock as _dt
from .state import CallState, ChannelState, LegState, Signal

_ROUTE_VARS = {"ROUTE_DIAL", "ROUTE_TIMEOUT", "ROUTE_FALLBACK", "ROUTE_REASON", "CLIENT_ID",
               "CLIENT_NAME", "ROUTE_RULE", "AGISTATUS"}
# uniqueids of finished calls remembered, to drop their trailing events (which come within
# seconds of the hangup); older ones are forgotten, so a daemon's memory stays bounded
REMEMBER_FINISHED = 10_000


@dataclass(slots=True)
class TrackerStats:
    """What the tracker did not turn into calls (nothing is invented from these)."""
    events: int = 0
    no_channel: int = 0        # Channel/Uniqueid `none` (a global VarSet) or absent
    unknown_channel: int = 0   # a channel never seen created (before its Newchannel, after a reconnect)
    after_finish: int = 0      # trailing events of calls already finished
    user_events: int = 0       # UserEvent: never a call by itself
    varsets_ignored: int = 0   # VarSets that named no tracked channel
    unmodeled: int = 0         # events the tracker has no use for
    snapshots: int = 0         # CoreShowChannels lists reconciled
    ended_unseen: int = 0      # channels found gone by a snapshot (hangup not seen)
    adopted: int = 0           # channels first learned from a snapshot


class Tracker:
    def __init__(self, pbx: str = "main", devices: DeviceMap | None = None, region: str = DEFAULT_REGION,
                 remember_finished: int = REMEMBER_FINISHED):
        self.pbx = pbx
        self.remember_finished = remember_finished
        self.devices = devices or DeviceMap()
        self.region = region
        self._seq = 0
        self._channels: dict[str, ChannelState] = {}
        self._call_of: dict[str, CallState] = {}          # channel uniqueid -> call
        self._by_linkedid: dict[str, CallState] = {}
        self._bridges: dict[str, set[str]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._out: list[Fact] = []
        self.stats = TrackerStats()
        # which event classes this stream carries (an AMI user's eventfilter may drop some)
        self._requests_seen = False
        self._bridges_seen = False
        self._varsets_seen = False
        self._last_time: float | None = None   # time of the latest event that said when
        self._gap: tuple[int, float | None] | None = None  # (seq, last time before it) of the last StreamGap
        self._listing: dict[str, ev.Channel] | None = None  # CoreShowChannel items of the list in progress

    # ------------------------------------------------------------------ public

    @property
    def calls_in_flight(self) -> int:
        return len({id(c) for c in self._call_of.values()})

    def held(self) -> dict[str, int]:
        """How much the tracker holds: what a long-running daemon watches stay bounded."""
        return {"channels": len(self._channels), "calls": self.calls_in_flight, "linkedids": len(self._by_linkedid),
                "bridges": len(self._bridges), "finished_remembered": len(self._finished)}

    def live_calls(self) -> list[LiveCall]:
        """The calls in flight now, oldest first."""
        out = []
        for call in self._live_calls():
            first = self._channels[call.key]
            out.append(LiveCall(self.pbx, first.first_linkedid, _dt(first.created_at), first.caller_num,
                                first.caller_name, tuple(sorted(call.ringing_agents)),
                                any(leg.answered_at is not None or leg.answered_seq is not None for leg in call.legs)))
        return out

    def feed(self, event: ev.AmiEvent) -> list[Fact]:
        self._seq += 1
        self._out = []
        self.stats.events += 1
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)
        elif type(event) is ev.UserEvent:
            self.stats.user_events += 1
        else:
            self.stats.unmodeled += 1
        t = event.time
        if t is not None and (self._last_time is None or t > self._last_time) and type(event) is not ev.StreamGap:
            self._last_time = t
        return self._out

    def close(self, reason: str = "stream ended") -> list[Fact]:
        """Every call still in flight, as an incomplete record (shutdown, end of a capture)."""
        self._out = []
        for call in self._live_calls():
            call.gaps.append(reason)
            self._finish(call)
        return self._out

    def expire(self, now: float, idle_seconds: float) -> list[Fact]:
        """Calls with no event for `idle_seconds` (their hangups were lost, e.g. in an outage)."""
        self._out = []
        for call in self._live_calls():
            if call.last_time is not None and now - call.last_time > idle_seconds:
                call.gaps.append(f"no events for {idle_seconds:.0f}s")
                self._finish(call)
        return self._out

    # ------------------------------------------------------------------ channels and calls

    def _live_calls(self) -> list[CallState]:
        seen: dict[int, CallState] = {}
        for call in self._call_of.values():
            seen.setdefault(id(call), call)
        return sorted(seen.values(), key=lambda c: self._channels[c.key].seq)

    def _channel(self, snap: ev.Channel | None, t: float | None, created: bool = False,
                 adopt: str | None = None, since: float | None = None) -> ChannelState | None:
        """The state of a channel an event mentions. Only its Newchannel (`created`) or the
        PBX's own list of channels (`adopt`: why it is first seen mid-call) creates it: any
        other event for a channel never seen creates nothing and is counted. Channels of calls
        already finished return None: their trailing events are noise."""
        uid = snap.uniqueid if snap is not None else ""
        if not uid or (uid[0] in "nN" and uid.lower() == "none"):  # see _no_channel
            self.stats.no_channel += 1
            return None
        if uid in self._finished:
            self.stats.after_finish += 1
            return None
        ch = self._channels.get(snap.uniqueid)
        if ch is None and not created and adopt is None:
            self.stats.unknown_channel += 1
            return None
        if ch is None:
            ch = ChannelState(uniqueid=snap.uniqueid, name=snap.name, linkedid=snap.linkedid,
                              first_linkedid=snap.linkedid, seq=self._seq,
                              created_at=t if adopt is None else since, seen_created=created,
                              exten=snap.exten, context=snap.context)
            self._channels[ch.uniqueid] = ch
            call = self._by_linkedid.get(snap.linkedid)
            if call is None:
                call = CallState(key=ch.uniqueid)
                if not created:
                    call.gaps.append(f"call already in progress when first seen ({snap.name}; {adopt})")
                call.linkedids.add(snap.linkedid)
                self._by_linkedid[snap.linkedid] = call
            call.channels.append(ch.uniqueid)
            self._call_of[ch.uniqueid] = call
        elif snap.linkedid and snap.linkedid != ch.linkedid:
            # linkedid changed (transfer, pickup): the call it now points at is the same call
            ch.linkedid = snap.linkedid
            other = self._by_linkedid.get(snap.linkedid)
            if other is None:
                call = self._call_of[ch.uniqueid]
                call.linkedids.add(snap.linkedid)
                self._by_linkedid[snap.linkedid] = call
            else:
                self._merge(self._call_of[ch.uniqueid], other)
        num = snap.caller_num
        if num and num != "<unknown>":
            ch.own_num = num             # what the PBX shows for the channel now
            if not ch.up:
                ch.caller_num = num      # the caller's number as it rang
        if snap.connected_num and snap.connected_num != "<unknown>":
            ch.connected_num = snap.connected_num
        if snap.exten:
            ch.last_exten = snap.exten
        ch.last_seen_seq = self._seq
        if t is not None:
            ch.last_seen_at = t
        if snap.caller_name and snap.caller_name != "<unknown>" and not ch.up:
            ch.caller_name = snap.caller_name
        if snap.state == "Up" and not ch.up:
            ch.up, ch.up_at = True, t if adopt is None else None  # a list says it is up, not since when
        call = self._call_of[ch.uniqueid]
        call.last_seq = self._seq
        if t is not None:
            call.last_time = t
        return ch

    def _merge(self, a: CallState, b: CallState) -> CallState:
        """One call now: keep the older (its first channel was seen first)."""
        if a is b:
            return a
        if self._channels[b.key].seq < self._channels[a.key].seq:
            a, b = b, a
        for uid in b.channels:
            self._call_of[uid] = a
        a.channels.extend(u for u in b.channels if u not in a.channels)
        for lid in b.linkedids:
            self._by_linkedid[lid] = a
        a.linkedids |= b.linkedids
        a.legs.extend(b.legs)
        a.legs.sort(key=lambda leg: leg.began_seq)
        a.transfers.extend(b.transfers)
        a.queue = a.queue or b.queue
        a.recording = a.recording or b.recording
        for k, v in b.route_vars.items():
            a.route_vars.setdefault(k, v)
        a.gaps.extend(b.gaps)
        if b.holder_seq > a.holder_seq:
            a.holder, a.holder_seq = b.holder, b.holder_seq
        a.last_seq = max(a.last_seq, b.last_seq)
        a.last_time = max((x for x in (a.last_time, b.last_time) if x is not None), default=None)
        a.ringing_agents |= b.ringing_agents
        return a

    def _link(self, *chans: ChannelState | None) -> CallState | None:
        # resolve each channel's call only when it is merged: a list of calls taken up front goes stale
        # after the first merge and merging a stale call again duplicates its legs and channels
        call = None
        for c in chans:
            if c is None:
                continue
            other = self._call_of[c.uniqueid]
            call = other if call is None else self._merge(call, other)
        return call

    def _leg_to(self, dest_uid: str, dialer_uid: str | None = None) -> LegState | None:
        call = self._call_of.get(dest_uid)
        if call is None:
            return None
        for leg in reversed(call.legs):
            if leg.dest == dest_uid and (dialer_uid is None or leg.dialer == dialer_uid):
                return leg
        return None

    def _agent_leg_side(self, uid: str) -> LegState | None:
        """The leg whose destination is this channel or its Local twin."""
        leg = self._leg_to(uid)
        if leg is None:
            peer = self._channels[uid].local_peer
            if peer is not None:
                leg = self._leg_to(peer)
        return leg

    def _endpoint(self, uid: str) -> bool:
        """A leg destination that neither dials on nor queues (itself or its Local twin)."""
        ch = self._channels[uid]
        return not any(c is not None and (c.dials or c.queue)
                       for c in (ch, self._channels.get(ch.local_peer) if ch.local_peer else None))

    def _party(self, call: CallState) -> Party:
        root = self._channels[call.key]
        raw = root.caller_num or None
        return Party(number=normalize(raw, self.region), raw=raw, name=root.caller_name or None)

    # ------------------------------------------------------------------ finishing

    def _maybe_finish(self, call: CallState) -> None:
        if all(self._channels[uid].hungup for uid in call.channels):
            self._finish(call)

    def _finish(self, call: CallState) -> None:
        record = build_record(call, self._channels, self.devices, self.pbx, self.region,
                              requests_visible=self._requests_seen, bridges_visible=self._bridges_seen,
                              varsets_visible=self._varsets_seen)
        for uid in call.channels:
            self._channels.pop(uid, None)
            self._call_of.pop(uid, None)
            self._finished[uid] = None
        for lid in call.linkedids:
            if self._by_linkedid.get(lid) is call:
                del self._by_linkedid[lid]
        # bridges whose BridgeLeave was never seen (outage, capture cut) would otherwise keep
        # finished channels forever
        gone = set(call.channels)
        for bid in [b for b, members in self._bridges.items() if members & gone]:
            self._bridges[bid] -= gone
            if not self._bridges[bid]:
                del self._bridges[bid]
        while len(self._finished) > self.remember_finished:
            self._finished.popitem(last=False)
        self._out.append(CallFinished(record, frozenset(call.channels) | frozenset(call.linkedids)))

    # ------------------------------------------------------------------ handlers

    def _on_newchannel(self, e: ev.Newchannel) -> None:
        self._channel(e.channel, e.time, created=True)

    def _on_channel_update(self, e: ev.ChannelEvent) -> None:
        self._channel(e.channel, e.time)

    def _on_varset(self, e: ev.VarSet) -> None:
        self._varsets_seen = True
        if e.channel is None or e.channel.uniqueid not in self._channels:
            # a global variable (Channel: none), or a channel never seen: never a call by itself
            self.stats.varsets_ignored += 1
        ch = self._channel(e.channel, e.time)
        if ch is None:
            return
        call = self._call_of[ch.uniqueid]
        name = e.variable.upper()
        if name == "MIXMONITOR_FILENAME" and e.value and not call.recording:
            call.recording = e.value
        elif name in _ROUTE_VARS:
            call.route_vars[name] = e.value
        elif name == "QUEUESTATUS" and e.value:
            call.queue_status = e.value.upper()

    def _on_hangup_request(self, e: ev.HangupRequest) -> None:
        self._requests_seen = True
        ch = self._channel(e.channel, e.time)
        if ch is not None and ch.first_signal is None:
            ch.first_signal = Signal(self._seq, e.time, e.soft, True)

    def _on_hangup(self, e: ev.Hangup) -> None:
        ch = self._channel(e.channel, e.time)
        if ch is None:
            return
        if ch.first_signal is None:
            ch.first_signal = Signal(self._seq, e.time, False, False)
        ch.hungup, ch.hangup_at, ch.cause = True, e.time, e.cause
        call = self._call_of[ch.uniqueid]
        leg = self._leg_to(ch.uniqueid)
        if leg is not None:
            if leg.ended_at is None:
                leg.ended_at = e.time
            self._agent_done(call, leg)
        self._maybe_finish(call)

    # ------------------------------------------------------------------ live facts

    def _view(self, call: CallState) -> _View:
        return _View(call, self._channels, self.devices, self.region)

    def _agent_name(self, call: CallState, leg: LegState) -> str | None:
        """The agent a leg rings, for the live facts: every leg of an inbound or internal call
        rings our side; the legs of an outbound call ring the client."""
        v = self._view(call)
        if v.direction == "out" or not v.is_endpoint(leg):
            return None
        return v.leg_name(leg)

    def _agent_done(self, call: CallState, leg: LegState) -> None:
        agent = leg.agent
        if agent is None or agent not in call.ringing_agents:
            return
        call.ringing_agents.discard(agent)
        result = leg_result_of_status(leg.status, answered=leg.answered_seq is not None) or "no-answer"
        self._out.append(AgentEnded(self.pbx, call.key, agent, leg.device, result, _dt(leg.ended_at)))

    def _on_dial_begin(self, e: ev.DialBegin) -> None:
        dest = self._channel(e.dest, e.time)
        if dest is None:
            return
        if e.caller is None:
            # Originate's pseudo-dial (main/dial.c with no caller; pbx.c originate): the PBX
            # rings this channel itself, it is not a leg; the channel is what the call starts at
            dest.originated = True
            return
        dialer = self._channel(e.caller, e.time)
        if dialer is None:
            return
        call = self._link(dialer, dest)
        dialer.dials = True
        leg = LegState(dest=dest.uniqueid, dialer=dialer.uniqueid, device=DeviceMap.device_of(dest.name),
                       began_seq=self._seq, began_at=e.time, dial_exten=e.caller.exten,
                       dial_string=e.dial_string)
        call.legs.append(leg)
        agent = self._agent_name(call, leg)
        if agent is not None and agent not in call.ringing_agents:
            leg.agent = agent
            call.ringing_agents.add(agent)
            self._out.append(AgentRinging(self.pbx, call.key, agent, leg.device, self._party(call),
                                          call.route_vars.get("CLIENT_ID") or None, _dt(e.time)))

    def _on_dial_end(self, e: ev.DialEnd) -> None:
        dest = self._channel(e.dest, e.time)
        if dest is None:
            return
        status = e.status.upper()
        if e.caller is None:
            if dest.originate_status is None and status not in ("", "RINGING", "PROCEEDING", "PROGRESS"):
                dest.originate_status = status
            return
        dialer = self._channel(e.caller, e.time)
        leg = self._leg_to(dest.uniqueid, dialer.uniqueid if dialer else None)
        if leg is None:
            return
        if leg.status is None and status not in ("", "RINGING", "PROCEEDING", "PROGRESS"):
            leg.status = status
            leg.ended_at, leg.ended_seq = e.time, self._seq
            call = self._call_of[dest.uniqueid]
            if status == "ANSWER":
                leg.answered_at, leg.answered_seq = e.time, self._seq
                if leg.agent is not None:
                    self._out.append(AgentAnswered(self.pbx, call.key, leg.agent, leg.device, self._party(call),
                                                   call.route_vars.get("CLIENT_ID") or None, _dt(e.time)))
            else:
                self._agent_done(call, leg)

    def _on_local_bridge(self, e: ev.LocalBridge) -> None:
        one, two = self._channel(e.one, e.time), self._channel(e.two, e.time)
        if one is None or two is None:
            return
        one.local_peer, two.local_peer = two.uniqueid, one.uniqueid
        self._link(one, two)

    def _on_bridge_enter(self, e: ev.BridgeEnter) -> None:
        self._bridges_seen = True
        ch = self._channel(e.channel, e.time)
        if ch is None:
            return
        members = self._bridges.setdefault(e.bridge_id, set())
        members.add(ch.uniqueid)
        live = [self._channels[u] for u in members if u in self._channels]
        call = self._link(*live)
        _met(live)
        for m in live:
            self._adopt_agent_channel(call, m, live, e.time)
        # who holds the call now: an agent-side channel bridged with something not on its own
        # leg; while a transfer briefly bridges two agents, the one entering (else the one
        # answered last) is the new holder
        best: tuple[bool, int, str] | None = None
        for m in live:
            leg = self._agent_leg_side(m.uniqueid)
            if leg is None or leg.dest not in self._channels:
                continue
            if not self._endpoint(leg.dest):
                continue  # plumbing (a Local channel into a queue or a dialplan that dials on)
            own = {leg.dest, self._channels[leg.dest].local_peer}
            if any(o.uniqueid not in own for o in live):
                rank = (ch.uniqueid in own, leg.answered_seq or leg.began_seq, leg.dest)
                best = max(best, rank) if best else rank
        if best is not None:
            call.holder, call.holder_seq = best[2], self._seq

    def _adopt_agent_channel(self, call: CallState, ch: ChannelState, live: list[ChannelState],
                             t: float | None) -> None:
        """A phone channel that joins the caller of an inbound or internal call without being
        dialed by it (it retrieved a parked call, was bridged by Bridge()/an AMI Bridge action)
        answered it: give it a leg, as a pickup does."""
        root = self._channels[call.key]
        if ch.uniqueid in (root.uniqueid, root.local_peer) or ch.name.startswith("Local/") or ch.dials:
            return  # the caller's side, plumbing, or an agent who placed a call (a consultation)
        if self._agent_leg_side(ch.uniqueid) is not None:
            return
        if not any(o.uniqueid in (root.uniqueid, root.local_peer) for o in live):
            return  # only a channel meeting the caller's side answers the caller
        v = self._view(call)
        if v.direction == "out":
            return
        leg = LegState(dest=ch.uniqueid, dialer=ch.uniqueid, device=DeviceMap.device_of(ch.name),
                       began_seq=self._seq, began_at=t, status="ANSWER", ended_at=t, answered_at=t,
                       answered_seq=self._seq, ended_seq=self._seq)
        call.legs.append(leg)
        agent = leg.agent = self._view(call).leg_name(leg)
        if agent is None:
            return
        call.ringing_agents.add(agent)
        self._out.append(AgentAnswered(self.pbx, call.key, agent, leg.device, self._party(call),
                                       call.route_vars.get("CLIENT_ID") or None, _dt(t)))

    def _on_bridge_leave(self, e: ev.BridgeLeave) -> None:
        members = self._bridges.get(e.bridge_id)
        if members is not None:
            members.discard(e.channel.uniqueid)
            if not members:
                del self._bridges[e.bridge_id]
        ch = self._channel(e.channel, e.time)
        if ch is not None:
            ch.left_seq = self._seq

    def _on_queue_join(self, e: ev.QueueCallerJoin) -> None:
        ch = self._channel(e.channel, e.time)
        if ch is None:
            return
        ch.queue = e.queue
        call = self._call_of[ch.uniqueid]
        call.queue = call.queue or e.queue

    def _on_queue_leave(self, e: ev.QueueCallerLeave) -> None:
        ch = self._channel(e.channel, e.time)
        if ch is not None and ch.queue_left_seq is None:
            ch.queue_left_seq = self._seq

    def _on_queue_abandon(self, e: ev.QueueCallerAbandon) -> None:
        ch = self._channel(e.channel, e.time)
        if ch is not None:
            ch.queue_abandoned = True

    def _on_agent_ring_no_answer(self, e: ev.AgentRingNoAnswer) -> None:
        if e.dest is None or e.dest.uniqueid not in self._channels:
            return
        leg = self._leg_to(e.dest.uniqueid)
        if leg is not None and leg.status is None:
            leg.status = "NOANSWER"
            leg.ended_at, leg.ended_seq = e.time, self._seq

    def _name_in_call(self, snap: ev.Channel | None) -> str | None:
        """A transfer party's name: the agent of the leg that reached this channel (or its Local
        twin), else the channel itself, named as any party is."""
        if snap is None or snap.uniqueid not in self._channels:
            return None
        call = self._call_of[snap.uniqueid]
        v = self._view(call)
        leg = self._agent_leg_side(snap.uniqueid)
        if leg is not None and leg.dest in v.ch:
            return v.leg_name(leg)
        return v.name(snap.uniqueid)

    def _on_blind_transfer(self, e: ev.BlindTransfer) -> None:
        if e.result and e.result.lower() != "success":
            return
        src = self._channel(e.transferer, e.time)
        dst = self._channel(e.transferee, e.time)
        call = self._link(src, dst)
        if call is None:
            return
        who = self._name_in_call(e.transferer)
        call.transfers.append(Transfer(kind="blind", **{"from": who}, to=e.extension or None))

    def _on_attended_transfer(self, e: ev.AttendedTransfer) -> None:
        if e.result and e.result.lower() != "success":
            return
        chans = [self._channel(s, e.time) for s in (e.orig_transferer, e.second_transferer, e.transferee,
                                                   e.transfer_target)]
        call = self._link(*chans)
        if call is None:
            return
        who = self._name_in_call(e.orig_transferer)
        target = None
        for snap in (e.transfer_target, e.second_transferer):
            if snap is None or snap.uniqueid not in self._channels:
                continue
            # the consultation leg's destination is the agent the call went to
            target = self._name_in_call(snap)
            if target and target != who:
                break
        call.transfers.append(Transfer(kind="attended", **{"from": who}, to=target))

    def _on_pickup(self, e: ev.Pickup) -> None:
        picker = self._channel(e.channel, e.time)
        target = self._channel(e.target, e.time)
        if picker is None or target is None:
            return
        call = self._link(target, picker)
        ringing = self._agent_leg_side(target.uniqueid)
        if ringing is not None:
            if ringing.status is None:
                ringing.status = "PICKUP"
                ringing.ended_at, ringing.ended_seq = e.time, self._seq
            # the picker's phone becomes an answered leg of this call (main/pickup.c ast_do_pickup)
            leg = LegState(dest=picker.uniqueid, dialer=ringing.dialer, device=DeviceMap.device_of(picker.name),
                           began_seq=self._seq, began_at=e.time, status="ANSWER", ended_at=e.time,
                           answered_at=e.time, answered_seq=self._seq, ended_seq=self._seq)
            call.legs.append(leg)
            agent = leg.agent = self._view(call).leg_name(leg)
            if agent is not None:
                call.ringing_agents.add(agent)
                self._out.append(AgentAnswered(self.pbx, call.key, agent, leg.device, self._party(call),
                                               call.route_vars.get("CLIENT_ID") or None, _dt(e.time)))

    def _on_rename(self, e: ev.Rename) -> None:
        ch = self._channels.get(e.uniqueid)
        if ch is not None:
            # a masquerade (pickup, some transfers) renames the replaced identity '<name><ZOMBIE>' just
            # before hanging it up: it is still the same device for legs and screen-pops
            ch.name = e.new_name.removesuffix("<ZOMBIE>").removesuffix("<MASQ>")

    def _on_gap(self, e: ev.StreamGap) -> None:
        self._gap = (self._seq, self._last_time)
        for call in self._live_calls():
            call.gaps.append(e.reason or "events may be missing")

    # ------------------------------------------------------------------ snapshot after a reconnect

    def _on_show_channel(self, e: ev.CoreShowChannel) -> None:
        """One channel of the PBX's list (CoreShowChannels: main/manager.c
        action_coreshowchannels, docs AMI_Events/CoreShowChannel): a channel we track is still
        up; one we never saw was created while we were away."""
        if self._listing is None:
            self._listing = {}
        if e.channel is None or _no_channel(e.channel):
            return
        self._listing[e.channel.uniqueid] = e.channel
        known = e.channel.uniqueid in self._channels
        ch = self._channel(e.channel, e.time, adopt="learned from the PBX's channel list after a reconnect",
                           since=_started(e.time, e.duration))
        if ch is None:
            return
        call = self._call_of[ch.uniqueid]
        if not known:
            self.stats.adopted += 1
            # the list is in no particular order; a call's first channel is the one whose
            # uniqueid is the linkedid (channel.c: a new call's linkedid is its own uniqueid)
            key = self._channels[call.key]
            if ch.uniqueid == ch.linkedid and not key.seen_created and key.uniqueid != key.linkedid:
                call.key = ch.uniqueid
                ch.seq, key.seq = min(ch.seq, key.seq), max(ch.seq, key.seq)
        if e.bridge_id:
            members = self._bridges.setdefault(e.bridge_id, set())
            members.add(ch.uniqueid)

    def _adopt_bridges(self) -> None:
        """Bridges learned from a channel list: their members are linked, and a phone found
        bridged with an adopted call's caller answered it (when: unknown)."""
        for members in list(self._bridges.values()):
            live = [self._channels[u] for u in members if u in self._channels]
            if len(live) < 2:
                continue
            call = self._link(*live)
            _met(live)
            if call is not None and not self._channels[call.key].seen_created and not call.legs:
                for m in live:
                    self._adopt_agent_channel(call, m, live, None)

    def _on_show_channels_complete(self, e: ev.CoreShowChannelsComplete) -> None:
        """The list is complete: every channel we track that is not on it and was not seen since
        the last reconnect ended while we were away. Its call ends when all its channels have;
        the record is incomplete, with the bounds of when it ended."""
        listed = self._listing or {}
        self._listing = None
        self.stats.snapshots += 1
        self._adopt_bridges()
        gap_seq, gap_from = self._gap if self._gap is not None else (self._seq, self._last_time)
        now = e.time
        for call in self._live_calls():
            gone = [self._channels[u] for u in call.channels
                    if u in self._channels and not self._channels[u].hungup and u not in listed
                    and self._channels[u].last_seen_seq <= gap_seq]
            if not gone:
                continue
            for ch in gone:
                ch.hungup, ch.unseen_end = True, True
                self.stats.ended_unseen += 1
            if all(self._channels[u].hungup for u in call.channels if u in self._channels):
                last = max((self._channels[u].last_seen_at for u in call.channels
                            if self._channels[u].last_seen_at is not None), default=gap_from)
                call.ended_unseen = (last, now)
                call.gaps.append(f"hung up while the AMI connection was down, between {_when(last)} and "
                                 f"{_when(now)} (its hangup was not seen)")
                self._finish(call)

_HANDLERS = {
    ev.Newchannel: Tracker._on_newchannel,
    ev.Newstate: Tracker._on_channel_update,
    ev.NewCallerid: Tracker._on_channel_update,
    ev.NewConnectedLine: Tracker._on_channel_update,
    ev.Newexten: Tracker._on_channel_update,
    ev.VarSet: Tracker._on_varset,
    ev.HangupRequest: Tracker._on_hangup_request,
    ev.Hangup: Tracker._on_hangup,
    ev.DialBegin: Tracker._on_dial_begin,
    ev.DialEnd: Tracker._on_dial_end,
    ev.LocalBridge: Tracker._on_local_bridge,
    ev.BridgeEnter: Tracker._on_bridge_enter,
    ev.BridgeLeave: Tracker._on_bridge_leave,
    ev.QueueCallerJoin: Tracker._on_queue_join,
    ev.QueueCallerLeave: Tracker._on_queue_leave,
    ev.QueueCallerAbandon: Tracker._on_queue_abandon,
    ev.AgentRingNoAnswer: Tracker._on_agent_ring_no_answer,
    ev.BlindTransfer: Tracker._on_blind_transfer,
    ev.AttendedTransfer: Tracker._on_attended_transfer,
    ev.Pickup: Tracker._on_pickup,
    ev.Rename: Tracker._on_rename,
    ev.StreamGap: Tracker._on_gap,
    ev.CoreShowChannel: Tracker._on_show_channel,
    ev.CoreShowChannelsComplete: Tracker._on_show_channels_complete,
}


def _met(live: list[ChannelState]) -> None:
    """Channels together in a bridge: each has met the others."""
    if len(live) > 1:
        uids = {m.uniqueid for m in live}
        for m in live:
            m.bridged = True
            m.peers |= uids - {m.uniqueid}


def _no_channel(snap: ev.Channel) -> bool:
    """Asterisk writes `Channel: none` / `Uniqueid: none` for an event about no channel (a
    global variable's VarSet, manager_channels.c)."""
    uid = snap.uniqueid
    return not uid or (uid[0] in "nN" and uid.lower() == "none")


def _started(now: float | None, duration: str) -> float | None:
    """CoreShowChannel's Duration (`HH:MM:SS`) back from when it was listed."""
    try:
        h, m, sec = (int(x) for x in duration.split(":"))
    except ValueError:
        return None
    return now - (h * 3600 + m * 60 + sec) if now is not None else None


def _when(t: float | None) -> str:
    if t is None or t < 1e9:
        return "an unknown time"
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")

