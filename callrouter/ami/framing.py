"""Cutting an AMI byte stream into frames, with a hard cap on an unfinished frame.

Pure (no IO), so the live client, tests and benchmarks share it. Each frame ends at a
blank line (`\\r\\n\\r\\n`). Two properties panoramisk's own buffer lacks:
- bounded: an unfinished frame larger than `max_frame` is reported once as `Oversized`
  and discarded up to and including the next blank line, holding only 3 bytes meanwhile;
- linear: each byte is searched for the separator at most twice (we remember where the
  last search stopped), so a frame arriving in many small reads costs no more than one.
"""
from __future__ import annotations

from dataclasses import dataclass

SEP = b"\r\n\r\n"
BANNER_PREFIX = b"Asterisk Call Manager/"
_BANNER_MAX = 256  # a greeting line longer than this is not a greeting
HEAD_BYTES = 80  # how much of an oversized frame is kept for the log


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame over the cap, dropped. `size` is what was seen of it when it was cut
    (for a frame still without its blank line, the size so far)."""
    size: int
    head: bytes


class FrameSplitter:
    def __init__(self, max_frame: int, banner: bytes | None = BANNER_PREFIX):
        self.max_frame = max_frame
        self.banner: str | None = None  # the greeting line, once seen
        self._want_banner = banner
        self._buf = bytearray()
        self._scan = 0  # the separator cannot end before this offset: do not search there again
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytearray | Oversized]:
        """Append data; return the frames it completed (without the blank line), in order."""
        buf = self._buf
        buf += data
        out: list[bytearray | Oversized] = []
        start = 0
        if self._want_banner is not None:
            start = self._take_banner()
            if start < 0:
                return out
        if self._discarding:
            end = buf.find(SEP, self._scan)
            if end < 0:
                self._keep_tail()
                return out
            start = end + len(SEP)
            self._discarding = False
        scan = max(start, self._scan)
        while (end := buf.find(SEP, scan)) >= 0:
            if end - start > self.max_frame:
                out.append(Oversized(end - start, bytes(buf[start:start + HEAD_BYTES])))
            else:
                out.append(buf[start:end])
            start = scan = end + len(SEP)
        if len(buf) - start > self.max_frame:
            out.append(Oversized(len(buf) - start, bytes(buf[start:start + HEAD_BYTES])))
            self._discarding = True
            self._keep_tail()
            return out
        del buf[:start]  # CPython trims a bytearray's front in O(1)
        # a separator may already have begun in the last 3 bytes
        self._scan = max(0, len(buf) - (len(SEP) - 1))
        return out

    def _keep_tail(self) -> None:
        """While discarding, only the last 3 bytes matter: a separator may begin there."""
        del self._buf[:-(len(SEP) - 1)]
        self._scan = 0

    def _take_banner(self) -> int:
        """Asterisk greets with one line before any frame. Returns where frames start,
        or -1 while the greeting is still incomplete."""
        buf, want = self._buf, self._want_banner
        assert want is not None
        n = min(len(buf), len(want))
        if buf[:n] != want[:n]:
            self._want_banner = None  # no greeting: frames start at the first byte
            return 0
        eol = buf.find(b"\r\n")
        if eol < 0:
            if len(buf) <= _BANNER_MAX:
                return -1
            self._want_banner = None
            return 0
        self.banner = buf[:eol].decode("ascii", "replace")
        self._want_banner = None
        return eol + 2
