"""Mutable per-call state the reducer keeps while a call is in flight.

Ordering uses `seq` (the position of the event in the stream), not time: captures
without timestamps must still tell which hangup came first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from callrouter.records import Transfer


@dataclass(slots=True)
class Signal:
    """A hangup request or hangup seen on a channel: who asked to end, and how."""
    seq: int
    time: float | None
    soft: bool      # SoftHangupRequest: Asterisk itself asked (dialplan, AMI action, bridge)
    request: bool   # False: a bare Hangup with no request before it


@dataclass(slots=True)
class ChannelState:
    uniqueid: str
    name: str
    linkedid: str                 # current: changes on transfers and pickups
    first_linkedid: str           # when first seen: the call's id is its first channel's
    seq: int                      # stream position of its first sighting
    created_at: float | None
    seen_created: bool            # Newchannel observed (False: joined mid-call)
    exten: str = ""               # dialplan exten when created (the DID on inbound)
    context: str = ""
    caller_num: str = ""
    caller_name: str = ""
    up: bool = False
    up_at: float | None = None
    hangup_at: float | None = None
    hungup: bool = False
    cause: int | None = None
    first_signal: Signal | None = None
    local_peer: str | None = None  # the other half of a Local channel
    queue: str | None = None       # queue this channel waited in as a caller
    dials: bool = False            # it dialed somewhere itself (so it is not an endpoint)
    queue_left_seq: int | None = None  # QueueCallerLeave: it stopped waiting in the queue
    queue_abandoned: bool = False  # QueueCallerAbandon: it left the queue unanswered (hung up, or timed out)
    # what the PBX shows for the channel itself: its own caller ID number (latest: Dial and
    # NewCallerid set it) and its connected line (the other party: never its own identity)
    own_num: str = ""
    connected_num: str = ""
    last_exten: str = ""           # dialplan exten in its latest snapshot
    originated: bool = False       # dest of a caller-less DialBegin: an Originate rang it
    originate_status: str | None = None  # that pseudo-dial's final status
    bridged: bool = False          # it shared a bridge with another channel
    peers: set[str] = field(default_factory=set)  # every channel it shared a bridge with
    left_seq: int | None = None    # its last BridgeLeave
    last_seen_seq: int = 0
    last_seen_at: float | None = None
    unseen_end: bool = False       # it was gone when the PBX was asked again (hangup not seen)


@dataclass(slots=True)
class LegState:
    """One Dial() attempt from `dialer` to `dest`."""
    dest: str
    dialer: str
    device: str
    began_seq: int
    began_at: float | None
    status: str | None = None      # first definitive DialEnd status: later ones do not overwrite
    ended_at: float | None = None
    answered_at: float | None = None
    answered_seq: int | None = None
    dial_exten: str = ""           # dialer's exten when it dialed (the number on outbound)
    dial_string: str = ""          # DialBegin's DialString (`150010002`, `89161234567@provider`)
    agent: str | None = None       # who it rang, named when it began (for the live facts)
    ended_seq: int | None = None   # stream position of the definitive end (DialEnd, ring timeout, pickup)


@dataclass(slots=True)
class CallState:
    key: str                                    # uniqueid of the first channel seen
    channels: list[str] = field(default_factory=list)
    linkedids: set[str] = field(default_factory=set)
    legs: list[LegState] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    queue: str | None = None
    recording: str | None = None
    route_vars: dict[str, str] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)
    holder: str | None = None        # uniqueid of the agent-side channel last bridged with the caller
    holder_seq: int = -1
    last_seq: int = 0
    last_time: float | None = None
    ringing_agents: set[str] = field(default_factory=set)
    ended_unseen: tuple[float | None, float | None] | None = None  # bounds of an end not seen
    queue_status: str | None = None  # QUEUESTATUS (app_queue.c set_queue_result): why Queue() returned
