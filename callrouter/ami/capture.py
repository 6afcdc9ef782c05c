"""Capture files as an event source, for `callrouter replay`, tests and benchmarks.

Two formats are read:
- JSONL raw frames, as in shared/asterisk-recordings: one `{"t": seconds, "raw": "Event: ...\\r\\n\\r\\n"}`
  per line (`t` optional);
- a JSON array of event objects, header name -> value (a common capture/export format).
A frame that cannot be read is reported through `on_error` and skipped; the rest go on.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .events import AmiEvent, MalformedEvent, parse_event, parse_raw_frame

log = logging.getLogger(__name__)


class CaptureError(ValueError):
    """The file is not a capture in any format we read."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One AMI frame as read from a capture: its headers and when it was seen (if said)."""
    headers: dict[str, str]
    seen_at: float | None


def _frame_of(obj: dict) -> Frame:
    """A raw-frame object ({"t", "raw"}) or an event object (header -> value)."""
    raw = obj.get("raw")
    if isinstance(raw, str):
        t = obj.get("t")
        return Frame(parse_raw_frame(raw), float(t) if isinstance(t, (int, float)) else None)
    return Frame({str(k): "" if v is None else str(v) for k, v in obj.items()}, None)


def _jsonl_frames(text: str, on_error: Callable[[str], None]) -> Iterator[Frame]:
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            on_error(f"line {n}: not JSON ({e.msg})")
            continue
        if isinstance(obj, dict):
            yield _frame_of(obj)
        else:
            on_error(f"line {n}: not a frame object")


def read_frames(path: str | Path, on_error: Callable[[str], None] | None = None) -> Iterator[Frame]:
    on_error = on_error or (lambda msg: log.warning("%s: %s", path, msg))
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    head = text.lstrip()[:1]
    if head == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise CaptureError(f"{path}: a JSON array that does not parse: {e}") from None
        for n, obj in enumerate(items):
            if isinstance(obj, dict):
                yield _frame_of(obj)
            else:
                on_error(f"item {n}: not an event object")
    elif head == "{" or not head:
        yield from _jsonl_frames(text, on_error)
    else:
        raise CaptureError(f"{path}: neither JSONL frames nor a JSON array of events")


def read_events(path: str | Path, on_error: Callable[[str], None] | None = None) -> Iterator[AmiEvent]:
    """Typed events of a capture, in order. Unparseable frames go to on_error and are skipped."""
    on_error = on_error or (lambda msg: log.warning("%s: %s", path, msg))
    for frame in read_frames(path, on_error):
        try:
            yield parse_event(frame.headers, frame.seen_at)
        except MalformedEvent as e:
            on_error(str(e))
