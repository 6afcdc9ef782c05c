"""Text from outside (the PBX's AMI events, FastAGI requests) made storable, once, where it
enters (pure: stdlib only).

SQLite stores almost anything; PostgreSQL refuses a NUL in text (and `\\u0000` in JSONB),
and no UTF-8 database takes a lone surrogate. One such value in a batch used to make the
database refuse the whole batch, forever. So at the edge:

- NUL becomes U+2400 SYMBOL FOR NULL (`␀`): visible, and distinguishable from U+FFFD, so
  the stored raw value still says what the PBX sent, character for character;
- a lone surrogate (from a JSON capture, or bytes decoded with surrogateescape) becomes
  U+FFFD, as invalid UTF-8 already does when the edges decode bytes with "replace";
- the length is bounded (`limit` characters, cut).

Everything else is kept as it came: the raw value matters (caller IDs, names shown to
managers), and other control characters are storable. A value that is already clean
costs a scan and is returned as is.
"""
from __future__ import annotations

import re

NUL_SIGN = "\u2400"
REPLACEMENT = "\ufffd"
MAX_TEXT = 64 * 1024

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value: str, limit: int = MAX_TEXT) -> str:
    """`value` as any store takes it: no NUL, no lone surrogate, at most `limit` characters."""
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", NUL_SIGN)
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub(REPLACEMENT, value)
    return value


def is_storable(value: str) -> bool:
    return "\x00" not in value and (value.isascii() or _SURROGATE.search(value) is None)
