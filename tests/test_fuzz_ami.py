"""Fuzzing the AMI walk (issue 14, item 6a): bytes -> FrameSplitter -> frames -> headers ->
typed events -> presence and tracker -> call records, the path the live client takes
(`callrouter/ami/client.py` _Protocol: a frame that fails to parse is a counted, logged skip).

Inputs: frames generated from the known event names and header keys over a small pool of
ids (so generated events do meet each other in the tracker), and the recorded fixtures
mutated (frames dropped, duplicated, reordered, fields dropped, garbage, huge and
non-UTF-8 values, a lost blank line), cut into arbitrary reads. Must hold for each input:
only `MalformedEvent` comes out of parsing, the walk never fails (its error counters stay
0), the splitter never holds more than its cap, and every record produced is a valid
CallRecord. The work per input is bounded by the input's size (no loop waits on anything)."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from contextlib import aclosing
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from callrouter.ami.capture import parse_raw_frame
from callrouter.ami.events import KNOWN_EVENTS, MalformedEvent, parse_event
from callrouter.ami.framing import FrameSplitter, Oversized
from callrouter.calllog.walk import CallLog
from callrouter.config import ManagerConfig, PbxConfig
from callrouter.devices import DeviceMap
from callrouter.records import CallRecord
from callrouter.routing.presence import Presence
from callrouter.tracker import CallFinished, Tracker
from fuzzing import fuzz

FIX = Path(__file__).parent / "fixtures" / "asterisk"
RECORDINGS = ("answered_owner", "blind_transfer", "queue_answered", "caller_abandons", "owner_busy_fallback",
              "ring_group")
MAX_FRAME = 8192  # small, so huge values do reach the oversized path
MANAGERS = (ManagerConfig(extension="101", devices=("PJSIP/101",)), ManagerConfig(extension="102"))


@functools.cache
def recording(name: str) -> tuple[bytes, ...]:
    lines = (FIX / f"{name}.ami.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line)["raw"].encode("utf-8") for line in lines if line.strip())


@functools.cache
def recorded_keys() -> tuple[str, ...]:
    keys: set[str] = set()
    for name in RECORDINGS:
        for raw in recording(name):
            keys |= set(parse_raw_frame(raw.decode("utf-8")))
    return tuple(sorted(keys))


class Walk:
    """The client's walk of one byte stream, minus the socket."""

    def __init__(self) -> None:
        devices = DeviceMap(MANAGERS)
        self.splitter = FrameSplitter(MAX_FRAME)
        self.presence = Presence(devices)
        self.calllog = CallLog(Tracker("fuzz", devices, "RU"),
                               observers=[functools.partial(self.presence.apply, source="fuzz")])
        self.malformed = self.oversized = self.events = 0
        self.records: list[CallRecord] = []

    def feed(self, data: bytes) -> None:
        for item in self.splitter.feed(data):
            assert self.splitter.pending <= MAX_FRAME + 4
            if isinstance(item, Oversized):
                self.oversized += 1
                continue
            text = bytes(item).decode("utf-8", "replace")
            if not text.strip():
                continue
            try:
                event = parse_event(parse_raw_frame(text), fallback_time=1_795_370_000.0)
            except MalformedEvent:
                self.malformed += 1  # the client logs it and skips the frame
                continue
            self.events += 1
            self._took(self.calllog.feed(event))

    def close(self) -> None:
        self._took(self.calllog.close("fuzz input ended"))
        failures = {k: v for k, v in self.calllog.stats.items() if k.endswith("-errors")}
        assert failures == {}, failures  # the walk swallows a bug per event: there must be none

    def _took(self, facts) -> None:
        for fact in facts:
            if isinstance(fact, CallFinished):
                rec = fact.record
                assert isinstance(rec, CallRecord)
                # valid as a model, and survives the JSON round trip the store and API make
                assert CallRecord.model_validate_json(rec.model_dump_json(by_alias=True)) == rec
                self.records.append(rec)


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(stream[last:p])
        last = p
    out.append(stream[last:])
    return out


def walk(stream: bytes, cuts: list[int]) -> Walk:
    w = Walk()
    for chunk in chunked(stream, cuts):
        w.feed(chunk)
    w.close()
    return w


# ------------------------------------------------------------------ strategies

IDS = st.sampled_from(["1795370423.1", "1795370423.2", "1795370423.3", "", "none", "x" * 300])
CHANNELS = st.sampled_from(["PJSIP/trunk-00000001", "PJSIP/101-00000002", "Local/101@phones-00000003;1",
                            "Local/101@phones-00000003;2", "PJSIP/102-00000004", "", "/", ";;"])
GARBAGE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["-1", "0", "99999999999999999999", "NaN", "inf", "1e309", "\x00", "\ud800", "Up", "6",
                     "ANSWER", "BUSY", "None", "1795370423.5"]),
    st.integers(-(2 ** 70), 2 ** 70).map(str),
)
HUGE = st.integers(MAX_FRAME // 2, 3 * MAX_FRAME).map(lambda n: "9" * n)


def header_value(key: str):
    lower = key.lower()
    if "uniqueid" in lower or lower in ("linkedid", "id"):
        return st.one_of(IDS, GARBAGE)
    if "channel" in lower and "state" not in lower:
        return st.one_of(CHANNELS, GARBAGE)
    return GARBAGE


@st.composite
def generated_frame(draw) -> bytes:
    keys = draw(st.lists(st.sampled_from(recorded_keys()), max_size=12, unique=True))
    lines = [f"Event: {draw(st.sampled_from(sorted(KNOWN_EVENTS)) | st.text(max_size=10))}"]
    lines += [f"{k}: {draw(header_value(k))}" for k in keys]
    if draw(st.booleans()):
        draw_idx = draw(st.integers(0, len(lines)))
        lines.insert(draw_idx, draw(st.sampled_from(["no colon here", ": value without key", "Event: Hangup",
                                                     "Uniqueid:", " : "])))
    text = "\r\n".join(lines).replace("\r\n\r\n", "\r\n")
    return text.encode("utf-8", "surrogatepass") + b"\r\n\r\n"


def mutate_frame(raw: bytes, op: str, data) -> list[bytes]:
    """One frame after `op`: a list, since some ops drop it or add one."""
    body = raw.removesuffix(b"\r\n\r\n")
    lines = body.split(b"\r\n")
    if op == "drop":
        return []
    if op == "duplicate":
        return [raw, raw]
    if op == "drop-field" and len(lines) > 1:
        del lines[data.draw(st.integers(0, len(lines) - 1))]
    elif op in ("garbage", "huge", "binary") and lines:
        i = data.draw(st.integers(0, len(lines) - 1))
        key = lines[i].partition(b":")[0]
        value = {"garbage": lambda: data.draw(GARBAGE).encode("utf-8", "surrogatepass"),
                 "huge": lambda: data.draw(HUGE).encode(),
                 "binary": lambda: data.draw(st.binary(max_size=64))}[op]()
        lines[i] = key + b": " + value
    elif op == "no-blank-line":
        return [body + b"\r\n"]  # runs into the next frame
    elif op == "truncate":
        return [raw[:data.draw(st.integers(0, len(raw)))]]
    return [b"\r\n".join(lines) + b"\r\n\r\n"]


OPS = ("drop", "duplicate", "drop-field", "garbage", "huge", "binary", "no-blank-line", "truncate", "swap")


# ------------------------------------------------------------------ properties

@fuzz(60)
@given(frames=st.lists(generated_frame(), max_size=40), cuts=st.lists(st.integers(0, 1 << 20), max_size=8),
       banner=st.booleans())
def test_generated_frames_never_break_the_walk(frames, cuts, banner):
    stream = (b"Asterisk Call Manager/9.0.0\r\n" if banner else b"") + b"".join(frames)
    w = walk(stream, cuts)
    assert w.events + w.malformed + w.oversized <= len(frames) + 1


@fuzz(60)
@given(name=st.sampled_from(RECORDINGS), data=st.data(), cuts=st.lists(st.integers(0, 1 << 22), max_size=12))
def test_mutated_recordings_never_break_the_walk(name, data, cuts):
    frames = list(recording(name))
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(OPS))
        i = data.draw(st.integers(0, len(frames) - 1)) if frames else 0
        if not frames:
            break
        if op == "swap":
            j = data.draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
        else:
            frames[i:i + 1] = mutate_frame(frames[i], op, data)
    w = walk(b"".join(frames), cuts)
    assert len(w.records) <= len(recording(name))  # calls are not invented from junk


def test_the_recordings_unmutated_give_their_records():
    """The baseline the mutations start from: each recording makes at least one record
    through this walk, in one read or one byte at a time."""
    for name in RECORDINGS:
        stream = b"".join(recording(name))
        whole = walk(stream, [])
        assert whole.records and whole.malformed == 0, name
        bytewise = Walk()
        for k in range(len(stream)):
            bytewise.feed(stream[k:k + 1])
        bytewise.close()
        assert [r.call_id for r in bytewise.records] == [r.call_id for r in whole.records]


# ------------------------------------------------------------------ what the fuzzing found

def test_an_impossible_timestamp_falls_back_to_the_read_time():
    """Found by fuzzing: `Timestamp: 99999999999999999999` (or nan, inf, negative) on a
    Hangup made building the record raise OverflowError, so the call's end was skipped."""
    for bad in ("99999999999999999999", "1e309", "nan", "inf", "-5", "253402300800"):
        frames = [re.sub(rb"Timestamp: [0-9.]+", b"Timestamp: " + bad.encode(), raw)
                  for raw in recording("answered_owner")]
        w = walk(b"".join(frames), [])
        assert w.records, bad
        assert all(r.started_at is not None and r.started_at.year < 10_000 for r in w.records)


# ------------------------------------------------------------------ through the live client

class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


SENTINEL = b"Event: UserEvent\r\nUserEvent: fuzz-end\r\n\r\n"


async def _through_the_client(stream: bytes) -> tuple[list, object, int]:
    from callrouter.ami.client import AmiSource
    from callrouter.ami.events import UserEvent
    from fakeami import FakeAmi

    async with FakeAmi([stream + b"\r\n\r\n" + SENTINEL]) as fake:
        cfg = PbxConfig(host="127.0.0.1", port=fake.port, connect_timeout=2.0, max_frame_bytes=MAX_FRAME)
        events: list = []
        async with AmiSource(cfg, snapshot_on_login=False) as source:
            async with asyncio.timeout(20):  # a hang guard, not a timing assertion
                async with aclosing(source.events()) as stream_events:
                    async for event in stream_events:
                        if isinstance(event, UserEvent) and "fuzz-end" in str(event):
                            break
                        events.append(event)
            return events, source.stats, fake.connections


@fuzz(15)
@given(name=st.sampled_from(RECORDINGS), data=st.data())
def test_mutated_recordings_through_the_live_client_are_logged_skips(name, data):
    """The same mutations over real TCP into AmiSource: the connection survives every bad
    frame (one connection), each skip is logged, and the events it delivers walk cleanly."""
    frames = list(recording(name))
    for _ in range(data.draw(st.integers(1, 10))):
        i = data.draw(st.integers(0, len(frames) - 1))
        frames[i:i + 1] = mutate_frame(frames[i], data.draw(st.sampled_from(OPS[1:-1])), data)
    warnings = _Warnings()
    logging.getLogger("callrouter.ami").addHandler(warnings)
    try:
        events, stats, connections = asyncio.run(_through_the_client(b"".join(frames)))
    finally:
        logging.getLogger("callrouter.ami").removeHandler(warnings)
    assert connections == 1 and stats.reconnects == 0
    skipped = [m for m in warnings.messages if "skipped" in m or "max_frame_bytes" in m]
    assert len(skipped) == stats.malformed + stats.oversized
    w = Walk()
    for event in events:
        w._took(w.calllog.feed(event))
    w.close()
