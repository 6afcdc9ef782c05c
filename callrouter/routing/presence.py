"""Presence (pure): is a manager's phone free right now? Learned from typed AMI events plus
a DND set; no IO, no clock. The daemon feeds every AMI event to `Presence.apply` and
loads DND from the store; routing asks `Presence.get(extension)`.

Sources, per extension:
- device state (`DeviceStateChange`: NOT_INUSE, INUSE, BUSY, RINGING, UNAVAILABLE, ...)
  and hint state (`ExtensionStatus`: a bit mask) - whichever was reported last wins;
- calls: a channel of the extension's device that is up, ringing or dialing makes it busy,
  whatever the device state says (PBXs without hints send no device states at all);
- DND: managers/supervisors set it through the store; `load_dnd`/`set_dnd` keep it here.

Devices map to extensions through `callrouter.devices.DeviceMap` (configured manager
devices first, else the extension in the channel name). After a gap in the AMI stream
(`StreamGap`), an Asterisk restart (`FullyBooted`) or `Shutdown`, everything learned
from events is forgotten: nothing known is "unknown", which routing treats as available
(a missed Hangup must not keep an owner "busy" forever). After every login the AMI
source asks for DeviceStateList / ExtensionStateList / CoreShowChannels
(`callrouter.ami.client.AmiSource.snapshot`); their items arrive as the same typed events
(DeviceStateChange, ExtensionStatus) and feed `apply` like any other, so what was
forgotten at the gap is learned again at once.

With `agi.routing = "process"` the router runs in a child process (`callrouter.routing.process`)
and asks a `PresenceCopy` there: the daemon's Presence, given an `on_change` callback, notes
which extensions an event, a gap or a DND change touched, and `take_changes()` hands their
statuses over; the copy answers exactly what this Presence would for them.

Several PBXs feed one Presence, each as its own `source` (its [[pbx]] name): channels are
keyed by (source, uniqueid), since two PBXs reuse uniqueids, and a gap, restart or shutdown
of one PBX forgets only what that PBX said.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from callrouter.ami.events import (
    AmiEvent,
    ChannelEvent,
    DeviceStateChange,
    ExtensionStatus,
    FullyBooted,
    Hangup,
    Newchannel,
    Newstate,
    Rename,
    Shutdown,
    StreamGap,
)
from callrouter.devices import DeviceMap
from callrouter.routing.types import AgentStatus, PresenceState

_DEVICE_STATES: dict[str, PresenceState] = {
    "NOT_INUSE": "idle",
    "INUSE": "busy", "BUSY": "busy", "RINGING": "busy", "RINGINUSE": "busy", "ONHOLD": "busy",
    "UNAVAILABLE": "unavailable", "INVALID": "unavailable",
    "UNKNOWN": "unknown",
}
# Channel states (Newstate/Newchannel ChannelStateDesc) that occupy the phone.
_BUSY_CHANNEL_STATES = frozenset({"Up", "Ringing", "Ring", "Dialing", "Dialing Offhook", "OffHook", "Busy",
                                  "Pre-ring"})
NOTHING_SEEN = "no device or hint state seen"
MAX_CHANNELS = 200_000  # bound on tracked channels if Hangups go missing without a StreamGap


def _hint_state(status: int) -> PresenceState:
    """ExtensionStatus Status: -2 removed, -1 not found, 0 idle, 1 in use, 2 busy,
    4 unavailable, 8 ringing, 16 on hold (bits combine: 9 = in use + ringing)."""
    if status < 0:
        return "unknown"
    if status & 4:
        return "unavailable"
    if status & (1 | 2 | 8 | 16):
        return "busy"
    return "idle"


class Presence:
    def __init__(self, devices: DeviceMap | None = None, dnd: Iterable[str] = ()):
        self._map = devices or DeviceMap()
        self._dnd: set[str] = set(dnd)
        self._seq = 0
        # extension -> (source, device) -> (state, seq)
        self._devices: dict[str, dict[tuple[str, str], tuple[str, int]]] = {}
        # extension -> source -> (hint status, text, seq)
        self._hints: dict[str, dict[str, tuple[int, str, int]]] = {}
        # (source, channel uniqueid) -> (extension, channel name, state)
        self._channels: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._ext_channels: dict[str, set[tuple[str, str]]] = {}
        # changes noted only when someone follows them (a routing process's PresenceCopy)
        self.on_change: Callable[[], None] | None = None
        self._changed: set[str] = set()

    # ------------------------------------------------------------ changes
    def _touch(self, extension: str) -> None:
        if self.on_change is None:
            return
        first = not self._changed
        self._changed.add(extension)
        if first:
            self.on_change()  # once per batch: the follower takes the changes when it can

    def take_changes(self) -> list[AgentStatus]:
        """The status of every extension touched since the last call (then forgotten)."""
        changed, self._changed = self._changed, set()
        return [self.get(e) for e in sorted(changed)]

    # ------------------------------------------------------------ DND
    def load_dnd(self, extensions: Iterable[str]) -> None:
        """Replace the DND set (from the store's dnd_extensions())."""
        new = set(extensions)
        for ext in new ^ self._dnd:
            self._touch(ext)
        self._dnd = new

    def set_dnd(self, extension: str, on: bool) -> None:
        self._touch(extension)
        if on:
            self._dnd.add(extension)
        else:
            self._dnd.discard(extension)

    @property
    def dnd(self) -> frozenset[str]:
        return frozenset(self._dnd)

    # ------------------------------------------------------------ events
    def apply(self, event: AmiEvent, source: str = "") -> None:
        """Feed one typed AMI event from PBX `source`. Events that say nothing about
        presence are ignored."""
        if isinstance(event, DeviceStateChange):
            ext = self._map.agent_of(event.device)
            if ext:
                self._seq += 1
                self._touch(ext)
                self._devices.setdefault(ext, {})[(source, event.device.lower())] = (event.state.upper(), self._seq)
        elif isinstance(event, ExtensionStatus):
            if event.exten:
                self._seq += 1
                self._touch(event.exten)
                self._hints.setdefault(event.exten, {})[source] = (event.status, event.status_text, self._seq)
        elif isinstance(event, Hangup):
            self._drop_channel((source, event.channel.uniqueid))
        elif isinstance(event, Newchannel | Newstate):
            self._track_channel(event, source)
        elif isinstance(event, Rename):
            key = (source, event.uniqueid)
            known = self._channels.get(key)
            if known is not None:
                self._drop_channel(key)
                self._add_channel(key, event.new_name, known[2])
        elif isinstance(event, StreamGap | FullyBooted | Shutdown):
            self.forget_events(source)

    def forget_events(self, source: str | None = None) -> None:
        """Forget everything learned from events of `source` (None: of every PBX). DND
        stays: it comes from the store."""
        if self.on_change is not None:
            for ext in {*self._devices, *self._hints, *self._ext_channels}:
                self._touch(ext)
        if source is None:
            self._devices.clear()
            self._hints.clear()
            self._channels.clear()
            self._ext_channels.clear()
            return
        for ext in list(self._devices):
            devs = {k: v for k, v in self._devices[ext].items() if k[0] != source}
            if devs:
                self._devices[ext] = devs
            else:
                del self._devices[ext]
        for ext in list(self._hints):
            self._hints[ext].pop(source, None)
            if not self._hints[ext]:
                del self._hints[ext]
        for key in [k for k in self._channels if k[0] == source]:
            self._drop_channel(key)

    def _track_channel(self, event: ChannelEvent, source: str) -> None:
        ch = event.channel
        key = (source, ch.uniqueid)
        known = self._channels.get(key)
        if known is not None and known[1] == ch.name:
            self._channels[key] = (known[0], known[1], ch.state)
            if known[2] != ch.state:
                self._touch(known[0])
            return
        if known is not None:
            self._drop_channel(key)
        self._add_channel(key, ch.name, ch.state)

    def _add_channel(self, uniqueid: tuple[str, str], name: str, state: str) -> None:
        ext = self._map.agent_of(name)
        if not ext:
            return
        if len(self._channels) >= MAX_CHANNELS:
            oldest = next(iter(self._channels))
            self._drop_channel(oldest)
        self._channels[uniqueid] = (ext, name, state)
        self._ext_channels.setdefault(ext, set()).add(uniqueid)
        self._touch(ext)

    def _drop_channel(self, uniqueid: tuple[str, str]) -> None:
        known = self._channels.pop(uniqueid, None)
        if known is None:
            return
        self._touch(known[0])
        chans = self._ext_channels.get(known[0])
        if chans is not None:
            chans.discard(uniqueid)
            if not chans:
                del self._ext_channels[known[0]]

    # ------------------------------------------------------------ queries
    def get(self, extension: str) -> AgentStatus:
        dnd = extension in self._dnd
        for uid in self._ext_channels.get(extension, ()):
            _, name, state = self._channels[uid]
            if state in _BUSY_CHANNEL_STATES:
                return AgentStatus(extension, "busy", dnd, f"channel {name} {state}")
        state, detail = self._reported(extension)
        return AgentStatus(extension, state, dnd, detail if not dnd or state != "unknown" else "DND set")

    def _reported(self, extension: str) -> tuple[PresenceState, str]:
        devices = {(dev if not src else f"{src}:{dev}"): v
                   for (src, dev), v in (self._devices.get(extension) or {}).items()}
        hint = max((self._hints.get(extension) or {}).values(), key=lambda h: h[2], default=None)
        dev_seq = max((seq for _, seq in devices.values()), default=0)
        if hint is not None and hint[2] > dev_seq:
            status, text, _ = hint
            return _hint_state(status), f"hint {extension} status {status}{' ' + text if text else ''}"
        if not devices:
            return "unknown", NOTHING_SEEN
        states = {dev: _DEVICE_STATES.get(st, "unknown") for dev, (st, _) in devices.items()}
        shown = ", ".join(f"{dev} {st}" for dev, (st, _) in sorted(devices.items()))
        values = set(states.values())
        if "busy" in values:
            return "busy", shown
        if "idle" in values:
            return "idle", shown
        if values == {"unavailable"}:
            return "unavailable", shown
        if "unavailable" in values and values <= {"unavailable", "unknown"}:
            return "unavailable", shown
        return "unknown", shown

    def snapshot(self) -> dict[str, AgentStatus]:
        """Every extension anything is known about -> its status (for display and tests)."""
        exts = set(self._devices) | set(self._hints) | set(self._ext_channels) | self._dnd
        return {e: self.get(e) for e in sorted(exts)}


class PresenceCopy:
    """What a routing process knows of presence: the daemon's `Presence.take_changes()`,
    applied in order. An extension never heard of is what a Presence that saw nothing of
    it says."""

    def __init__(self) -> None:
        self._status: dict[str, AgentStatus] = {}

    def update(self, statuses: Iterable[AgentStatus]) -> None:
        for st in statuses:
            self._status[st.extension] = st

    def replace(self, statuses: Iterable[AgentStatus]) -> None:
        self._status = {st.extension: st for st in statuses}

    def get(self, extension: str) -> AgentStatus:
        st = self._status.get(extension)
        return st if st is not None else AgentStatus(extension, "unknown", False, NOTHING_SEEN)
