"""A scripted PBX for tests: emits AMI event frames the way Asterisk 13+ does for
call shapes the recordings do not cover (PJSIP/SIP phones and trunks, attended
transfers that change linkedids, pickups). It stands in for the PBX only."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Chan:
    name: str
    uniqueid: str
    linkedid: str
    exten: str = "s"
    context: str = "default"
    caller_num: str = ""
    caller_name: str = ""
    state: str = "Down"


@dataclass
class Pbx:
    t: float = 1795370000.0
    timestamps: bool = True
    frames: list[dict[str, str]] = field(default_factory=list)
    # event names an AMI user's eventfilter drops (manager.conf `eventfilter = !Event: ...`)
    filtered: frozenset[str] = frozenset()
    _uid: int = 100
    _seq: int = 0

    def tick(self, seconds: float) -> None:
        self.t += seconds

    def _emit(self, event: str, **headers: str) -> None:
        if event in self.filtered:
            return
        frame = {"Event": event, "Privilege": "call,all"}
        if self.timestamps:
            frame["Timestamp"] = f"{self.t:.6f}"
        frame.update({k: str(v) for k, v in headers.items()})
        self.frames.append(frame)

    @staticmethod
    def _snap(ch: Chan, prefix: str = "") -> dict[str, str]:
        return {f"{prefix}Channel": ch.name, f"{prefix}ChannelStateDesc": ch.state,
                f"{prefix}CallerIDNum": ch.caller_num or "<unknown>",
                f"{prefix}CallerIDName": ch.caller_name or "<unknown>",
                f"{prefix}Context": ch.context, f"{prefix}Exten": ch.exten,
                f"{prefix}Uniqueid": ch.uniqueid, f"{prefix}Linkedid": ch.linkedid}

    def channel(self, device: str, *, exten: str = "s", context: str = "default", caller: str = "",
                name: str = "", linked_to: Chan | None = None) -> Chan:
        self._uid += 1
        self._seq += 1
        uid = f"{int(self.t)}.{self._uid}"
        ch = Chan(f"{device}-{self._seq:08x}", uid, linked_to.linkedid if linked_to else uid,
                  exten, context, caller, name)
        self._emit("Newchannel", **self._snap(ch))
        return ch

    def set_state(self, ch: Chan, state: str) -> None:
        ch.state = state
        self._emit("Newstate", **self._snap(ch))

    def set_linkedid(self, ch: Chan, linkedid: str) -> None:
        ch.linkedid = linkedid  # Asterisk reports it on the channel's next event

    def var(self, ch: Chan, name: str, value: str) -> None:
        self._emit("VarSet", **self._snap(ch), Variable=name, Value=value)

    def dial_begin(self, src: Chan | None, dst: Chan, dialstring: str = "") -> None:
        h = self._snap(dst, "Dest")
        if src is not None:
            h.update(self._snap(src))
        self._emit("DialBegin", **h, DialString=dialstring or dst.name.split("-")[0])

    def dial_end(self, src: Chan | None, dst: Chan, status: str) -> None:
        h = self._snap(dst, "Dest")
        if src is not None:
            h.update(self._snap(src))
        self._emit("DialEnd", **h, DialStatus=status)

    def answer(self, ch: Chan) -> None:
        self.set_state(ch, "Up")

    def bridge(self, bridge_id: str, *chans: Chan) -> None:
        for ch in chans:
            self._emit("BridgeEnter", **self._snap(ch), BridgeUniqueid=bridge_id)

    def unbridge(self, bridge_id: str, *chans: Chan) -> None:
        for ch in chans:
            self._emit("BridgeLeave", **self._snap(ch), BridgeUniqueid=bridge_id)

    def hangup_request(self, ch: Chan, soft: bool = False, cause: int = 16) -> None:
        self._emit("SoftHangupRequest" if soft else "HangupRequest", **self._snap(ch), Cause=str(cause))

    def hangup(self, ch: Chan, cause: int = 16) -> None:
        self._emit("Hangup", **self._snap(ch), Cause=str(cause), **{"Cause-txt": "Normal Clearing"})

    def blind_transfer(self, transferer: Chan, transferee: Chan, exten: str, bridge_id: str) -> None:
        self._emit("BlindTransfer", Result="Success", **self._snap(transferer, "Transferer"),
                   **self._snap(transferee, "Transferee"), BridgeUniqueid=bridge_id, IsExternal="No",
                   Context="internal", Extension=exten)

    def attended_transfer(self, orig: Chan, second: Chan, transferee: Chan, target: Chan) -> None:
        self._emit("AttendedTransfer", Result="Success", **self._snap(orig, "OrigTransferer"),
                   **self._snap(second, "SecondTransferer"), **self._snap(transferee, "Transferee"),
                   **self._snap(target, "TransferTarget"), DestType="Bridge")

    def pickup(self, picker: Chan, target: Chan) -> None:
        self._emit("Pickup", **self._snap(picker), **self._snap(target, "Target"))

    # ---- additions for tests/test_tracker_realworld.py (additive: nothing above changed)

    def local_pair(self, target: str, *, linked_to: Chan | None = None, caller: str = "") -> tuple[Chan, Chan]:
        """Local/<target>-<n>;1 and ;2 as Asterisk creates them: both Newchannel, then LocalBridge."""
        self._uid += 1
        self._seq += 1
        base = f"Local/{target}-{self._seq:08x}"
        lid = linked_to.linkedid if linked_to else None
        uid1 = f"{int(self.t)}.{self._uid}"
        self._uid += 1
        uid2 = f"{int(self.t)}.{self._uid}"
        ctx = target.split("@", 1)[1] if "@" in target else "default"
        exten = target.split("@", 1)[0]
        one = Chan(base + ";1", uid1, lid or uid1, exten, ctx, caller, "", "Down")
        two = Chan(base + ";2", uid2, lid or uid1, exten, ctx, caller, "", "Ring")
        self._emit("Newchannel", **self._snap(one))
        self._emit("Newchannel", **self._snap(two))
        self._emit("LocalBridge", **self._snap(one, "LocalOne"), **self._snap(two, "LocalTwo"),
                   Context=ctx, Exten=exten, LocalOptimization="Yes")
        return one, two

    def enter(self, bridge_id: str, ch: Chan, swap: Chan | None = None) -> None:
        """BridgeEnter, with SwapUniqueid when the channel replaces another (moves, optimizations)."""
        h = self._snap(ch)
        if swap is not None:
            h["SwapUniqueid"] = swap.uniqueid
        self._emit("BridgeEnter", **h, BridgeUniqueid=bridge_id)

    def rename(self, ch: Chan, new_name: str) -> None:
        self._emit("Rename", Channel=ch.name, Newname=new_name, Uniqueid=ch.uniqueid)
        ch.name = new_name

    def exten(self, ch: Chan, app: str, data: str = "") -> None:
        self._emit("Newexten", **self._snap(ch), Application=app, AppData=data, Extension=ch.exten)

    def local_optimization_begin(self, one: Chan, two: Chan) -> None:
        """Only the Begin/End pair; the test scripts the bridge moves between them."""
        self._emit("LocalOptimizationBegin", **self._snap(one, "LocalOne"), **self._snap(two, "LocalTwo"), Id="1")

    def local_optimization_end(self, one: Chan, two: Chan, success: bool = True) -> None:
        self._emit("LocalOptimizationEnd", **self._snap(one, "LocalOne"), **self._snap(two, "LocalTwo"),
                   Success="Yes" if success else "No", Id="1")

    def attended_transfer_ex(self, orig: Chan, second: Chan | None, transferee: Chan | None,
                             target: Chan | None, *, dest_type: str = "Bridge", orig_bridge: str = "",
                             second_bridge: str = "", dest_bridge: str = "", is_external: str = "Yes",
                             local_one: Chan | None = None, local_two: Chan | None = None) -> None:
        """AttendedTransfer with the headers Asterisk 13+ sends (docs: AMI_Events/AttendedTransfer)."""
        h: dict[str, str] = {"Result": "Success", **self._snap(orig, "OrigTransferer")}
        if orig_bridge:
            h["OrigBridgeUniqueid"] = orig_bridge
        if second is not None:
            h.update(self._snap(second, "SecondTransferer"))
        if second_bridge:
            h["SecondBridgeUniqueid"] = second_bridge
        if transferee is not None:
            h.update(self._snap(transferee, "Transferee"))
        if target is not None:
            h.update(self._snap(target, "TransferTarget"))
        h["IsExternal"] = is_external
        h["DestType"] = dest_type
        if dest_bridge:
            h["DestBridgeUniqueid"] = dest_bridge
        if local_one is not None:
            h.update(self._snap(local_one, "LocalOne"))
        if local_two is not None:
            h.update(self._snap(local_two, "LocalTwo"))
        self._emit("AttendedTransfer", **h)

    def blind_transfer_ex(self, transferer: Chan, transferee: Chan, exten: str, bridge_id: str,
                          context: str = "from-internal", is_external: str = "Yes") -> None:
        self._emit("BlindTransfer", Result="Success", **self._snap(transferer, "Transferer"),
                   **self._snap(transferee, "Transferee"), BridgeUniqueid=bridge_id, IsExternal=is_external,
                   Context=context, Extension=exten)

    def queue_join(self, ch: Chan, queue: str, position: int = 1) -> None:
        self._emit("QueueCallerJoin", **self._snap(ch), Queue=queue, Position=str(position), Count=str(position))

    def queue_leave(self, ch: Chan, queue: str) -> None:
        self._emit("QueueCallerLeave", **self._snap(ch), Queue=queue, Position="1", Count="0")

    def agent_event(self, event: str, caller: Chan | None, member: Chan | None, queue: str,
                    interface: str, **extra: str) -> None:
        h: dict[str, str] = {}
        if caller is not None:
            h.update(self._snap(caller))
        if member is not None:
            h.update(self._snap(member, "Dest"))
        self._emit(event, **h, Queue=queue, MemberName=interface, Interface=interface, **extra)

    def raw(self, frame: dict[str, str]) -> str:
        return "".join(f"{k}: {v}\r\n" for k, v in frame.items()) + "\r\n"

    def raw_frames(self) -> list[str]:
        return [self.raw(f) for f in self.frames]

    # ---- additions for tests/test_tracker_anynaming.py (additive)

    def set_callerid(self, ch: Chan, number: str) -> None:
        """NewCallerid (manager_channels.c): the channel's own caller ID changed, e.g. Dial
        setting it on the outgoing channel (app_dial.c) or CALLERID(num) in the dialplan."""
        ch.caller_num = number
        self._emit("NewCallerid", **self._snap(ch), CID_CallingPres="0 (Presentation Allowed, Not Screened)")

    def global_var(self, name: str, value: str) -> None:
        """Set(GLOBAL(x)=...): VarSet with no channel (manager_channels.c writes `none`)."""
        self._emit("VarSet", Channel="none", Uniqueid="none", Variable=name, Value=value)

    def user_event(self, name: str, ch: Chan | None = None, **headers: str) -> None:
        """UserEvent() (apps/app_userevent.c), with the channel's snapshot when one ran it."""
        self._emit("UserEvent", **(self._snap(ch) if ch else {}), UserEvent=name, **headers)

    def show_channels(self, chans: list[Chan], bridge_of: dict[str, str] | None = None,
                      action_id: str = "snap-1", up_for: float = 0.0) -> None:
        """The answer to CoreShowChannels as the AMI source puts it into the stream
        (main/manager.c action_coreshowchannels, docs AMI_Events/CoreShowChannel): one CoreShowChannel per channel up,
        with its BridgeId and Duration, then CoreShowChannelsComplete with ListItems."""
        bridge_of = bridge_of or {}
        d = int(up_for)
        for ch in chans:
            self._emit("CoreShowChannel", ActionID=action_id, **self._snap(ch),
                       BridgeId=bridge_of.get(ch.uniqueid, ""), Application="AppDial",
                       ApplicationData="(Outgoing Line)", Duration=f"{d // 3600:02d}:{d // 60 % 60:02d}:{d % 60:02d}")
        self._emit("CoreShowChannelsComplete", ActionID=action_id, EventList="Complete",
                   ListItems=str(len(chans)))

    def gap(self, reason: str = "connection closed by the PBX") -> dict[str, str]:
        """Where the source would put its StreamGap marker (not an AMI frame: a marker frame
        that tests turn into ami.events.StreamGap)."""
        frame = {"Event": "__gap__", "Reason": reason, "Timestamp": f"{self.t:.6f}"}
        self.frames.append(frame)
        return frame
