"""The AMI parsing made cheaper gives what the plain two-pass parsing gave, frame for frame.

The reference below is the code as it was before (`parse_raw_frame`, then `_Headers` over
its dict, one header at a time, `storable` on every value): the live client's
`frame_headers` + `parse_headers`, and `parse_raw_frame` + `parse_event`, must give the same
headers (same order) and equal events, or the same MalformedEvent, for every frame of every
recording in tests/fixtures and for frames made awkward on purpose (case variants of a
header, repeats, NUL, non-ASCII, lone surrogates, over-long values, blank keys, bare CR).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from callrouter.ami import events as ev
from callrouter.ami.capture import parse_raw_frame
from callrouter.text import storable

FIX = Path(__file__).parent / "fixtures" / "asterisk"


def ref_raw_frame(raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            continue
        headers.setdefault(key.strip(), value[1:] if value.startswith(" ") else value)
    return headers


class RefHeaders(ev._Headers):
    """_Headers as it was: every header through str(), storable() and strip() one by one;
    channel() asks `get` for each prefixed name."""
    __slots__ = ()

    def __init__(self, raw):
        h: dict[str, str] = {}
        for k, v in raw.items():
            if isinstance(v, list):
                v = v[0] if v else ""
            if v is None:
                v = ""
            v = storable(str(v), ev.MAX_HEADER_VALUE)
            h[str(k).strip().lower()] = v.strip()
        self._h = h

    def channel(self, prefix: str = "", required: bool = True):
        name = self.get(prefix + "Channel")
        uid = self.get(prefix + "Uniqueid")
        if name.lower() == "none" or uid.lower() == "none":
            name = uid = ""
        if not name or not uid:
            if required:
                missing = prefix + ("Channel" if not name else "Uniqueid")
                raise ev.MalformedEvent(f"{self.get('event') or 'frame'} lacks {missing}")
            return None
        state = self.get(prefix + "ChannelStateDesc") or ev._STATE_NAMES.get(self.get(prefix + "ChannelState"), "")
        return ev.Channel(
            name=name, uniqueid=uid, linkedid=self.get(prefix + "Linkedid") or uid, state=state,
            caller_num=self.get(prefix + "CallerIDNum"), caller_name=self.get(prefix + "CallerIDName"),
            connected_num=self.get(prefix + "ConnectedLineNum"),
            connected_name=self.get(prefix + "ConnectedLineName"),
            context=self.get(prefix + "Context"), exten=self.get(prefix + "Exten"),
        )


def ref_event(headers: dict[str, Any], t: float | None) -> Any:
    """The event (or the MalformedEvent's message) the reference parsing gives."""
    try:
        return ev._parse(RefHeaders(headers), t)
    except ev.MalformedEvent as e:
        return ("malformed", str(e))


def outcome(fn, *args) -> Any:
    try:
        return fn(*args)
    except ev.MalformedEvent as e:
        return ("malformed", str(e))


def recorded_frames() -> list[str]:
    frames = []
    for path in sorted(FIX.glob("*.ami.jsonl")):
        with open(path, encoding="utf-8") as f:
            frames += [json.loads(line)["raw"] for line in f if line.strip()]
    return frames


def awkward(frames: list[str], n: int = 3000) -> list[str]:
    """Recorded frames with headers changed the ways a PBX (or a fuzzer) could."""
    rnd = random.Random(14)
    out = []
    tweaks = [
        lambda k, v: [f"{k.upper()}: {v}x", f"{k}: {v}"],         # a case variant first
        lambda k, v: [f"{k}: {v}", f"{k.lower()}: other"],          # a case variant after
        lambda k, v: [f"{k}: {v}", f"{k}: repeat"],                 # an exact repeat
        lambda k, v: [f"{k}:{v}"],                                  # no space
        lambda k, v: [f"{k}:   {v}  "],                             # spaces around the value
        lambda k, v: [f"  {k} : {v}"],                              # spaces around the key
        lambda k, v: [f"{k}: {v}\x00nul"],                          # NUL
        lambda k, v: [f"{k}: Jos\u00e9 {v}"],                       # non-ASCII
        lambda k, v: [f"{k}: {v}\ud800"],                           # a lone surrogate
        lambda k, v: [f"{k}: " + "x" * (ev.MAX_HEADER_VALUE + 5)],  # over-long
        lambda k, v: [f": {v}", f"{k}: {v}"],                       # a blank key
        lambda k, v: [f"{k}: {v}\rtail"],                           # a bare CR
        lambda k, v: ["no colon here", f"{k}: {v}"],
        lambda k, v: [f"{k}: none"],                                # a channel of `none`
        lambda k, v: [],                                            # the header left out
    ]
    for _ in range(n):
        lines = rnd.choice(frames).rstrip("\r\n").split("\r\n")
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(lines))
            k, _, v = lines[i].partition(": ")
            lines[i:i + 1] = rnd.choice(tweaks)(k, v)
        out.append("\r\n".join(lines) + rnd.choice(["", "\r\n", "\n", "\r\n\r\n"]))
    return out


FRAMES = recorded_frames()


def test_the_fixtures_hold_many_frames():
    assert len(FRAMES) > 5000 and len({ref_raw_frame(f).get("Event") for f in FRAMES}) > 20


@pytest.mark.parametrize("which", ["recorded", "awkward"])
def test_one_pass_parsing_gives_what_two_passes_gave(which):
    frames = FRAMES if which == "recorded" else awkward(FRAMES)
    for raw in frames:
        want_headers = ref_raw_frame(raw)
        assert list(parse_raw_frame(raw).items()) == list(want_headers.items()), raw
        headers, view = ev.frame_headers(raw)
        assert list(headers.items()) == list(want_headers.items()), raw
        want = ref_event(want_headers, 1.5)
        assert outcome(ev.parse_headers, view, 1.5) == want, raw
        assert outcome(ev.parse_event, want_headers, 1.5) == want, raw


def test_parse_event_of_mappings_that_are_not_raw_frames():
    """JSON captures and panoramisk give other values: lists, None, numbers, str subclasses."""
    class S(str):
        pass
    cases = [
        {"Event": "Hangup", "Channel": ["SIP/a-1", "SIP/b"], "Uniqueid": S(" 1.1 "), "Cause": 16, "Linkedid": None},
        {"Event": "Newstate", "Channel": "SIP/a-1", "Uniqueid": "1.1", "ChannelState": 6, "Context": []},
        {"event": "VarSet", "channel": "none", "uniqueid": "none", "Variable": "X", "Value": "\x00\ud800"},
        {"Event": "DialBegin", "DestChannel": "SIP/b-2", "DestUniqueid": "1.2", "Timestamp": "nan"},
        {"Event": "Bogus", " Key ": " v ", "KEY": "w"},
    ]
    for headers in cases:
        assert outcome(ev.parse_event, headers, 2.0) == ref_event(headers, 2.0), headers
