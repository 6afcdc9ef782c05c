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
    _uid: int = 100
    _seq: int = 0

    def tick(self, seconds: float) -> None:
        self.t += seconds

    def _emit(self, event: str, **headers: str) -> None:
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

    def raw(self, frame: dict[str, str]) -> str:
        return "".join(f"{k}: {v}\r\n" for k, v in frame.items()) + "\r\n"

    def raw_frames(self) -> list[str]:
        return [self.raw(f) for f in self.frames]
