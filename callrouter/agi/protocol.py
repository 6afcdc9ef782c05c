"""FastAGI wire protocol: the request header block Asterisk sends, the commands we send,
the replies it gives. Bounded everywhere: a header block larger than the cap, a
connection closed before the blank line, or garbage is an error for that connection
only (panoramisk's reader loops forever on an early close and has no size limit).

Asterisk's side, for reference: on `AGI(agi://host:4573/route,ARG)` it connects, sends
`agi_key: value` lines (agi_network_script: route, agi_callerid, agi_uniqueid, ...,
agi_arg_1: ARG) and a blank line, then reads one command line at a time and answers
each with `200 result=...` (or 5xx; `520-` starts a multi-line usage text ending with
`520 End of proper usage.`). If the channel hangs up meanwhile it sends a `HANGUP`
line before the next reply. Closing the socket ends the AGI (AGISTATUS=SUCCESS).
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 200
MAX_REPLY_LINES = 64

_KEY = re.compile(r"agi_[a-z0-9_]{1,40}")
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(Exception):
    """The header block cannot be a FastAGI request. `kind`: oversized, incomplete, unparseable."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


class PeerGone(Exception):
    """The peer closed the connection (or hung the channel up) while we were answering."""


@dataclass(frozen=True)
class AgiRequest:
    env: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.env.get(key, default)

    @property
    def script(self) -> str:
        """`route` for agi://host:4573/route (query string and slashes dropped)."""
        s = self.env.get("agi_network_script")
        if s is None:
            req = self.env.get("agi_request", "")
            s = urlsplit(req).path if "://" in req else req
        return s.split("?", 1)[0].strip("/")

    @property
    def args(self) -> list[str]:
        out = []
        n = 1
        while f"agi_arg_{n}" in self.env:
            out.append(self.env[f"agi_arg_{n}"])
            n += 1
        return out

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def linkedid(self) -> str:
        """agi_arg_1 (the dialplan passes ${CHANNEL(linkedid)}), else agi_uniqueid."""
        arg = self.env.get("agi_arg_1", "").strip()
        if _ID.fullmatch(arg):
            return arg
        uid = self.uniqueid.strip()
        return uid if _ID.fullmatch(uid) else ""

    @property
    def callerid(self) -> str | None:
        v = self.env.get("agi_callerid")
        return v if v is not None else None

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")


def parse_header(lines: list[str]) -> AgiRequest:
    """`agi_key: value` lines (without the blank line) -> AgiRequest. Raises BadRequest
    (unparseable) when the block is not an AGI environment."""
    env: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise BadRequest("unparseable", f"not an agi_* header line: {line[:60]!r}")
        env[key] = value[1:] if value.startswith(" ") else value
    if "agi_network_script" not in env and "agi_request" not in env:
        raise BadRequest("unparseable", "no agi_network_script or agi_request")
    return AgiRequest(env)


async def read_request(reader: asyncio.StreamReader, max_bytes: int = MAX_HEADER_BYTES) -> AgiRequest:
    """Read the header block up to its blank line. Raises BadRequest: `oversized` past
    `max_bytes`, `incomplete` when the peer closes first, `unparseable` for garbage.
    No timeout here: the caller bounds the whole read with its deadline."""
    lines: list[str] = []
    total = 0
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            raise BadRequest("incomplete", f"closed after {total + len(e.partial)} bytes, before the blank line") \
                from None
        except asyncio.LimitOverrunError:
            raise BadRequest("oversized", "a header line longer than the stream limit") from None
        total += len(raw)
        if total > max_bytes:
            raise BadRequest("oversized", f"header block larger than {max_bytes} bytes")
        line = raw.rstrip(b"\r\n")
        if not line:
            if not lines:
                continue  # tolerate a stray newline before the block
            break
        if len(lines) >= MAX_HEADER_LINES:
            raise BadRequest("oversized", f"more than {MAX_HEADER_LINES} header lines")
        lines.append(line.decode("utf-8", "replace"))
    return parse_header(lines)


def quote(value: str) -> str:
    """An AGI argument in double quotes: no control characters (a newline would end the
    command and start another), backslash and quote escaped."""
    value = _UNSAFE_VALUE.sub("", value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_variable(name: str, value: str) -> bytes:
    return f"SET VARIABLE {name} {quote(value)}\n".encode()


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str
    hangup: bool = False  # Asterisk said HANGUP before this reply: the channel is gone

    @property
    def ok(self) -> bool:
        return self.code == 200


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One reply to one command. Raises PeerGone when the connection closes."""
    hangup = False
    for _ in range(MAX_REPLY_LINES):
        try:
            raw = await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            raise PeerGone("connection closed while waiting for a reply") from None
        except asyncio.LimitOverrunError:
            raise PeerGone("reply line too long") from None
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line == "HANGUP":
            hangup = True
            continue
        if len(line) >= 3 and line[:3].isdigit():
            code = int(line[:3])
            if line[3:4] == "-":  # multi-line: until "CODE text"
                for _ in range(MAX_REPLY_LINES):
                    try:
                        more = (await reader.readuntil(b"\n")).decode("utf-8", "replace")
                    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                        raise PeerGone("connection closed inside a multi-line reply") from None
                    if more.startswith(f"{code} "):
                        break
                return Reply(code, line[4:], hangup)
            return Reply(code, line[4:], hangup)
        if not line:
            continue
        return Reply(0, line, hangup)
    raise PeerGone("no reply line")
