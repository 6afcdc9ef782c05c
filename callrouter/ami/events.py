"""Typed AMI events: the one place raw AMI headers become values the tracker can trust.

Every source (the live panoramisk connection, a capture file) turns a frame's headers
into one of these with `parse_event`. Required headers missing -> `MalformedEvent`;
an event name we do not model -> `Unknown` (kept, never an error: Asterisk adds events
between versions).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callrouter.text import storable

# Newstate's ChannelState numbers, for PBXs/captures that omit ChannelStateDesc.
_STATE_NAMES = {
    "0": "Down", "1": "Rsrvd", "2": "OffHook", "3": "Dialing", "4": "Ring",
    "5": "Ringing", "6": "Up", "7": "Busy", "8": "Dialing Offhook", "9": "Pre-ring",
}

MAX_HEADER_VALUE = 64 * 1024  # longer values are truncated: no real header comes near it


class MalformedEvent(ValueError):
    """A frame that cannot be an AMI event (no Event header, a required header missing)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel as an event describes it at that moment (one 'snapshot' header group)."""
    name: str
    uniqueid: str
    linkedid: str
    state: str = ""
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    context: str = ""
    exten: str = ""


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """Base of every event. `time` is seconds since the epoch (Asterisk's Timestamp header
    when present, else when the source saw the frame), or None when nothing says."""
    time: float | None


@dataclass(frozen=True, slots=True)
class ChannelEvent(AmiEvent):
    channel: Channel


@dataclass(frozen=True, slots=True)
class Newchannel(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class Newstate(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class NewCallerid(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class NewConnectedLine(ChannelEvent):
    pass


@dataclass(frozen=True, slots=True)
class Hangup(ChannelEvent):
    cause: int = 0


@dataclass(frozen=True, slots=True)
class HangupRequest(ChannelEvent):
    """HangupRequest (soft=False: the channel's own side asked, e.g. the phone hung up) or
    SoftHangupRequest (soft=True: something inside Asterisk asked)."""
    cause: int = 0
    soft: bool = False


@dataclass(frozen=True, slots=True)
class VarSet(ChannelEvent):
    variable: str = ""
    value: str = ""


@dataclass(frozen=True, slots=True)
class Newexten(ChannelEvent):
    application: str = ""
    app_data: str = ""


@dataclass(frozen=True, slots=True)
class DialBegin(AmiEvent):
    caller: Channel | None  # None for originate pseudo-dials
    dest: Channel
    dial_string: str = ""


@dataclass(frozen=True, slots=True)
class DialState(AmiEvent):
    caller: Channel | None
    dest: Channel
    status: str = ""


@dataclass(frozen=True, slots=True)
class DialEnd(AmiEvent):
    caller: Channel | None
    dest: Channel
    status: str = ""
    forward: str = ""


@dataclass(frozen=True, slots=True)
class BridgeEnter(ChannelEvent):
    bridge_id: str = ""
    swap_uniqueid: str = ""


@dataclass(frozen=True, slots=True)
class BridgeLeave(ChannelEvent):
    bridge_id: str = ""


@dataclass(frozen=True, slots=True)
class LocalBridge(AmiEvent):
    one: Channel
    two: Channel
    optimization: bool = False


@dataclass(frozen=True, slots=True)
class LocalOptimizationBegin(AmiEvent):
    one: Channel
    two: Channel
    source: Channel | None
    dest_uniqueid: str = ""
    id: str = ""


@dataclass(frozen=True, slots=True)
class LocalOptimizationEnd(AmiEvent):
    one: Channel
    two: Channel
    success: bool = False
    id: str = ""


@dataclass(frozen=True, slots=True)
class BlindTransfer(AmiEvent):
    transferer: Channel
    transferee: Channel | None
    extension: str = ""
    context: str = ""
    result: str = ""
    bridge_id: str = ""


@dataclass(frozen=True, slots=True)
class AttendedTransfer(AmiEvent):
    orig_transferer: Channel
    second_transferer: Channel | None
    transferee: Channel | None
    transfer_target: Channel | None
    dest_type: str = ""
    result: str = ""
    orig_bridge_id: str = ""
    second_bridge_id: str = ""
    dest_bridge_id: str = ""
    dest_app: str = ""
    local_one: Channel | None = None
    local_two: Channel | None = None


@dataclass(frozen=True, slots=True)
class Pickup(ChannelEvent):
    target: Channel | None = None


@dataclass(frozen=True, slots=True)
class Rename(AmiEvent):
    uniqueid: str
    old_name: str
    new_name: str


@dataclass(frozen=True, slots=True)
class QueueCallerJoin(ChannelEvent):
    queue: str = ""
    position: int = 0


@dataclass(frozen=True, slots=True)
class QueueCallerLeave(ChannelEvent):
    queue: str = ""


@dataclass(frozen=True, slots=True)
class QueueCallerAbandon(ChannelEvent):
    queue: str = ""
    hold_time: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentEvent(AmiEvent):
    caller: Channel | None  # None on AgentComplete after the caller's channel is gone
    dest: Channel | None
    queue: str = ""
    member_name: str = ""
    interface: str = ""


@dataclass(frozen=True, slots=True)
class AgentCalled(AgentEvent):
    pass


@dataclass(frozen=True, slots=True)
class AgentConnect(AgentEvent):
    ring_seconds: float = 0.0
    hold_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentComplete(AgentEvent):
    reason: str = ""
    talk_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(AgentEvent):
    ring_seconds: float = 0.0  # the header is milliseconds; converted here, once


@dataclass(frozen=True, slots=True)
class AgentDump(AgentEvent):
    pass


@dataclass(frozen=True, slots=True)
class DeviceStateChange(AmiEvent):
    device: str
    state: str


@dataclass(frozen=True, slots=True)
class ExtensionStatus(AmiEvent):
    exten: str
    context: str
    status: int
    status_text: str = ""
    hint: str = ""


@dataclass(frozen=True, slots=True)
class FullyBooted(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class Shutdown(AmiEvent):
    pass


@dataclass(frozen=True, slots=True)
class StreamGap(AmiEvent):
    """Not an Asterisk event: a source says events may have been missed here (connection
    lost, frames dropped). Calls in flight across a gap cannot be fully explained."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UserEvent(AmiEvent):
    """UserEvent() from the dialplan or the AMI action: application data, never a call by itself."""
    name: str
    channel: Channel | None = None


@dataclass(frozen=True, slots=True)
class CoreShowChannel(AmiEvent):
    """One item of the CoreShowChannels list (main/manager.c action_coreshowchannels; docs
    AMI_Events/CoreShowChannel): a channel up now, with the bridge it is in (`BridgeId`,
    empty when none) and how long it has existed (`Duration`, HH:MM:SS)."""
    channel: Channel
    bridge_id: str = ""
    application: str = ""
    duration: str = ""
    action_id: str = ""


@dataclass(frozen=True, slots=True)
class CoreShowChannelsComplete(AmiEvent):
    """The end of a CoreShowChannels list: every channel up was listed before it."""
    items: int = 0
    action_id: str = ""


@dataclass(frozen=True, slots=True)
class BridgeListItem(AmiEvent):
    """One item of the BridgeList list (manager_bridges.c)."""
    bridge_id: str
    bridge_type: str = ""
    num_channels: int = 0
    action_id: str = ""


@dataclass(frozen=True, slots=True)
class Unknown(AmiEvent):
    name: str
    headers: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- parsing

_CHANNEL_HEADERS = ("Channel", "Uniqueid", "ChannelStateDesc", "ChannelState", "Linkedid", "CallerIDNum",
                    "CallerIDName", "ConnectedLineNum", "ConnectedLineName", "Context", "Exten")


@functools.cache
def _channel_keys(prefix: str) -> tuple[str, ...]:
    """The lower-cased header names of one channel group (prefixes are the parsers' literals)."""
    return tuple((prefix + name).lower() for name in _CHANNEL_HEADERS)


class _Headers:
    """Case-insensitive view of one frame's headers (CEL says UniqueID, others Uniqueid)."""
    __slots__ = ("_h",)

    def __init__(self, raw: Mapping[str, Any]):
        h: dict[str, str] = {}
        for k, v in raw.items():
            if type(v) is not str:
                if isinstance(v, list):  # panoramisk turns repeated headers into lists
                    v = v[0] if v else ""
                if v is None:
                    v = ""
                v = str(v)
            # NUL, lone surrogates, length: see callrouter.text (a short ASCII value without
            # NUL is storable as it is: the check here spares a call per header)
            if len(v) > MAX_HEADER_VALUE or "\x00" in v or not v.isascii():
                v = storable(v, MAX_HEADER_VALUE)
            h[str(k).strip().lower()] = v.strip()
        self._h = h

    def get(self, key: str, default: str = "") -> str:
        return self._h.get(key.lower(), default)

    def has(self, key: str) -> bool:
        return key.lower() in self._h

    def need(self, key: str) -> str:
        v = self._h.get(key.lower())
        if not v:
            raise MalformedEvent(f"{self.get('event') or 'frame'} lacks {key}")
        return v

    def channel(self, prefix: str = "", required: bool = True) -> Channel | None:
        (k_name, k_uid, k_desc, k_state, k_linkedid, k_cnum, k_cname, k_lnum, k_lname, k_context,
         k_exten) = _channel_keys(prefix)
        get = self._h.get
        name = get(k_name, "")
        uid = get(k_uid, "")
        if name.lower() == "none" or uid.lower() == "none":
            name = uid = ""  # manager_channels.c: an event about no channel (a global VarSet)
        if not name or not uid:
            if required:
                missing = prefix + ("Channel" if not name else "Uniqueid")
                raise MalformedEvent(f"{self.get('event') or 'frame'} lacks {missing}")
            return None
        state = get(k_desc, "") or _STATE_NAMES.get(get(k_state, ""), "")
        return Channel(
            name=name, uniqueid=uid, linkedid=get(k_linkedid, "") or uid, state=state,
            caller_num=get(k_cnum, ""), caller_name=get(k_cname, ""),
            connected_num=get(k_lnum, ""), connected_name=get(k_lname, ""),
            context=get(k_context, ""), exten=get(k_exten, ""),
        )

    def number(self, key: str, scale: float = 1.0) -> float:
        v = self.get(key)
        try:
            return float(v) * scale if v else 0.0
        except ValueError:
            raise MalformedEvent(f"{self.get('event')}: {key} is not a number") from None

    def integer(self, key: str) -> int:
        v = self.get(key)
        try:
            return int(v) if v else 0
        except ValueError:
            raise MalformedEvent(f"{self.get('event')}: {key} is not an integer") from None

    def as_dict(self) -> dict[str, str]:
        return dict(self._h)


def _agent(cls, h: _Headers, t, **extra):
    return cls(t, h.channel(required=False), h.channel("Dest", required=False), h.get("Queue"),
               h.get("MemberName"), h.get("Interface"), **extra)


_PARSERS = {
    "newchannel": lambda h, t: Newchannel(t, h.channel()),
    "newstate": lambda h, t: Newstate(t, h.channel()),
    "newcallerid": lambda h, t: NewCallerid(t, h.channel()),
    "newconnectedline": lambda h, t: NewConnectedLine(t, h.channel()),
    "hangup": lambda h, t: Hangup(t, h.channel(), h.integer("Cause")),
    "hanguprequest": lambda h, t: HangupRequest(t, h.channel(), h.integer("Cause"), False),
    "softhanguprequest": lambda h, t: HangupRequest(t, h.channel(), h.integer("Cause"), True),
    # a global variable's VarSet has `Channel: none`: kept, with no channel (never a call)
    "varset": lambda h, t: VarSet(t, h.channel(required=False), h.need("Variable"), h.get("Value")),
    "userevent": lambda h, t: UserEvent(t, h.get("UserEvent"), h.channel(required=False)),
    "coreshowchannel": lambda h, t: CoreShowChannel(t, h.channel(), h.get("BridgeId"), h.get("Application"),
                                                    h.get("Duration"), h.get("ActionID")),
    "coreshowchannelscomplete": lambda h, t: CoreShowChannelsComplete(t, h.integer("ListItems"),
                                                                      h.get("ActionID")),
    "bridgelistitem": lambda h, t: BridgeListItem(t, h.need("BridgeUniqueid"), h.get("BridgeType"),
                                                  h.integer("BridgeNumChannels"), h.get("ActionID")),
    "newexten": lambda h, t: Newexten(t, h.channel(), h.get("Application"), h.get("AppData")),
    "dialbegin": lambda h, t: DialBegin(t, h.channel(required=False), h.channel("Dest"), h.get("DialString")),
    "dialstate": lambda h, t: DialState(t, h.channel(required=False), h.channel("Dest"), h.get("DialStatus")),
    "dialend": lambda h, t: DialEnd(t, h.channel(required=False), h.channel("Dest"), h.get("DialStatus"),
                                    h.get("Forward")),
    "bridgeenter": lambda h, t: BridgeEnter(t, h.channel(), h.need("BridgeUniqueid"), h.get("SwapUniqueid")),
    "bridgeleave": lambda h, t: BridgeLeave(t, h.channel(), h.need("BridgeUniqueid")),
    "localbridge": lambda h, t: LocalBridge(t, h.channel("LocalOne"), h.channel("LocalTwo"),
                                            h.get("LocalOptimization").lower() == "yes"),
    "localoptimizationbegin": lambda h, t: LocalOptimizationBegin(
        t, h.channel("LocalOne"), h.channel("LocalTwo"), h.channel("Source", required=False),
        h.get("DestUniqueId"), h.get("Id")),
    "localoptimizationend": lambda h, t: LocalOptimizationEnd(
        t, h.channel("LocalOne"), h.channel("LocalTwo"), h.get("Success").lower() == "yes", h.get("Id")),
    "blindtransfer": lambda h, t: BlindTransfer(
        t, h.channel("Transferer"), h.channel("Transferee", required=False), h.get("Extension"),
        h.get("Context"), h.get("Result"), h.get("BridgeUniqueid")),
    "attendedtransfer": lambda h, t: AttendedTransfer(
        t, h.channel("OrigTransferer"), h.channel("SecondTransferer", required=False),
        h.channel("Transferee", required=False), h.channel("TransferTarget", required=False),
        h.get("DestType"), h.get("Result"), h.get("OrigBridgeUniqueid"), h.get("SecondBridgeUniqueid"),
        h.get("DestBridgeUniqueid"), h.get("DestApp"),
        h.channel("LocalOne", required=False), h.channel("LocalTwo", required=False)),
    "pickup": lambda h, t: Pickup(t, h.channel(), h.channel("Target", required=False)),
    "rename": lambda h, t: Rename(t, h.need("Uniqueid"), h.need("Channel"), h.need("Newname")),
    "queuecallerjoin": lambda h, t: QueueCallerJoin(t, h.channel(), h.need("Queue"), h.integer("Position")),
    "queuecallerleave": lambda h, t: QueueCallerLeave(t, h.channel(), h.need("Queue")),
    "queuecallerabandon": lambda h, t: QueueCallerAbandon(t, h.channel(), h.need("Queue"),
                                                          h.number("HoldTime")),
    "agentcalled": lambda h, t: _agent(AgentCalled, h, t),
    "agentconnect": lambda h, t: _agent(AgentConnect, h, t, ring_seconds=h.number("RingTime"),
                                        hold_seconds=h.number("HoldTime")),
    "agentcomplete": lambda h, t: _agent(AgentComplete, h, t, reason=h.get("Reason"),
                                         talk_seconds=h.number("TalkTime")),
    "agentringnoanswer": lambda h, t: _agent(AgentRingNoAnswer, h, t,
                                             ring_seconds=h.number("RingTime", 0.001)),
    "agentdump": lambda h, t: _agent(AgentDump, h, t),
    "devicestatechange": lambda h, t: DeviceStateChange(t, h.need("Device"), h.need("State")),
    "extensionstatus": lambda h, t: ExtensionStatus(t, h.need("Exten"), h.get("Context"),
                                                    h.integer("Status"), h.get("StatusText"), h.get("Hint")),
    "fullybooted": lambda h, t: FullyBooted(t),
    "shutdown": lambda h, t: Shutdown(t),
}

KNOWN_EVENTS = frozenset(_PARSERS)


MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z, datetime's last second


def _event_time(h: _Headers, fallback: float | None) -> float | None:
    """Asterisk's own Timestamp (timestampevents=yes) beats when we happened to read the frame."""
    v = h.get("Timestamp")
    if v:
        try:
            t = float(v)
        except ValueError:
            return fallback
        # nan, inf or past year 9999 is no time: it would break ordering and datetime (fuzzing)
        if 0.0 <= t <= MAX_TIMESTAMP:
            return t
    return fallback


def parse_event(headers: Mapping[str, Any], fallback_time: float | None = None) -> AmiEvent:
    """Headers of one AMI frame -> a typed event. Raises MalformedEvent when it cannot be one."""
    return _parse(_Headers(headers), fallback_time)


def parse_raw_frame(raw: str) -> dict[str, str]:
    """`Key: Value` lines of one AMI frame -> headers. Lines without `:` are ignored,
    like Asterisk's own manager parser does; the first of a repeated header wins."""
    headers: dict[str, str] = {}
    for line in raw.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            key = key.strip()
            if key and key not in headers:
                headers[key] = value[1:] if value[:1] == " " else value
    return headers


def frame_headers(text: str) -> tuple[dict[str, str], _Headers]:
    """One AMI frame's text -> (its headers as `parse_raw_frame` gives them, the view
    `parse_event` would make of them), for `parse_headers`: the live client's path, where
    the view is built without `_Headers`' per-value checks when the frame has no value
    `storable` could change (short, ASCII, no NUL)."""
    headers = parse_raw_frame(text)
    if len(text) <= MAX_HEADER_VALUE and text.isascii() and "\x00" not in text:
        h = {k.lower(): v.strip() for k, v in headers.items()}  # a later case variant wins, as in _Headers
    else:
        h = {k.lower(): storable(v, MAX_HEADER_VALUE).strip() for k, v in headers.items()}
    view = _Headers.__new__(_Headers)
    view._h = h
    return headers, view


def parse_headers(view: _Headers, fallback_time: float | None = None) -> AmiEvent:
    """`parse_event` of a frame whose view `frame_headers` made."""
    return _parse(view, fallback_time)


def _parse(h: _Headers, fallback_time: float | None) -> AmiEvent:
    name = h.get("Event")
    if not name:
        raise MalformedEvent("frame has no Event header")
    t = _event_time(h, fallback_time)
    parser = _PARSERS.get(name.lower())
    if parser is None:
        return Unknown(t, name, h.as_dict())
    return parser(h, t)
