"""FastAGI wire protocol, as pure functions over bytes (the server feeds them what the
socket gives): the request header block Asterisk sends, the commands we send, the
replies it gives. Bounded everywhere: the caller caps the buffer it passes.

Asterisk's side, for reference: on `AGI(agi://host:4573/route,ARG)` it connects, sends
`agi_key: value` lines (agi_network_script: route, agi_callerid, agi_uniqueid, ...,
agi_arg_1: ARG) and a blank line, then reads one command line at a time and answers
each with `200 result=...` (or 5xx; `520-` starts a multi-line usage text ending with
`520 End of proper usage.`). If the channel hangs up meanwhile it sends a `HANGUP`
line before the next reply. Closing the socket ends the AGI (AGISTATUS=SUCCESS).
Asterisk reads commands with a buffered reader but waits for them by polling the
socket, so commands must not be pipelined: send one, read its reply, send the next.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from callrouter.text import storable

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_LINES = 200

_LINE = re.compile(r"^(agi_[a-z0-9_]{1,40}): ?(.*)$", re.M)
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(Exception):
    """The header block cannot be a FastAGI request. `kind`: oversized, incomplete, unparseable."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


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

    def param(self, name: str) -> str:
        """A query parameter of the AGI URL (`agi://host:4573/route?pbx=east` -> "east" for
        `pbx`), from agi_network_script or else agi_request; "" when absent."""
        for key in ("agi_network_script", "agi_request"):
            s = self.env.get(key, "")
            if "?" in s:
                for k, v in parse_qsl(s.split("?", 1)[1]):
                    if k == name:
                        return v.strip()
        return ""

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
        return self.env.get("agi_callerid")

    @property
    def channel(self) -> str:
        return self.env.get("agi_channel", "")


def header_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of the header block, length of its blank-line separator) or None if not yet
    complete. Asterisk ends lines with LF; CRLF is accepted too. A blank line before
    any header line is skipped by `parse_block`, not taken as the end."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start) if b"\r" in buf else -1
    if lf < 0 and crlf < 0:
        return None
    if crlf >= 0 and (lf < 0 or crlf + 1 < lf):
        return crlf, 4
    return lf, 2


def parse_block(block: bytes | bytearray) -> AgiRequest:
    """The header block (without its blank line) -> AgiRequest, or BadRequest."""
    # invalid UTF-8 replaced here; NUL and the length by callrouter.text: every value storable
    text = storable(bytes(block).decode("utf-8", "replace"), MAX_HEADER_BYTES)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if "\n\n" in text or text[:1] == "\n" or text[-1:] == "\n":
        n_lines = sum(1 for ln in text.split("\n") if ln)
    else:  # the usual block: no blank lines inside
        n_lines = text.count("\n") + 1 if text else 0
    if n_lines > MAX_HEADER_LINES:
        raise BadRequest("oversized", f"more than {MAX_HEADER_LINES} header lines")
    pairs = _LINE.findall(text)
    if len(pairs) != n_lines:
        return parse_header(text.split("\n"))  # finds and reports the line that is not agi_*
    return _request(dict(pairs))


def parse_header(lines: list[str]) -> AgiRequest:
    """`agi_key: value` lines -> AgiRequest. Raises BadRequest (unparseable) when the
    block is not an AGI environment."""
    env: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise BadRequest("unparseable", f"not an agi_* header line: {line[:60]!r}")
        env[m.group(1)] = m.group(2)
    return _request(env)


def _request(env: dict[str, str]) -> AgiRequest:
    if "agi_network_script" not in env and "agi_request" not in env:
        raise BadRequest("unparseable", "no agi_network_script or agi_request")
    return AgiRequest(env)


def quote(value: str) -> str:
    """An AGI argument in double quotes: no control characters (a newline would end the
    command and start another), backslash and quote escaped."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'  # the usual case: nothing to remove or escape
    value = channel_value(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# res_agi reads a command line into a buffer of AGI_BUF_LEN (2048) bytes
MAX_COMMAND_BYTES = 2000


def set_variable(name: str, value: str) -> bytes:
    """One SET VARIABLE line; a value too long for Asterisk's command buffer is cut (a
    longer line would be read as two commands: a cut value and garbage)."""
    line = f"SET VARIABLE {name} {quote(value)}\n".encode()
    while len(line) > MAX_COMMAND_BYTES and value:
        value = value[:max(0, len(value) - (len(line) - MAX_COMMAND_BYTES))]
        line = f"SET VARIABLE {name} {quote(value)}\n".encode()
    return line


# Asterisk's argument splitter (app.c, __ast_app_separate_args) gives these a meaning in
# the value of ARRAY(): the delimiter, quotes, the escape, and the nesting it will not
# split inside. A backslash before any character makes it literal.
_ARRAY_ESCAPES = str.maketrans({c: "\\" + c for c in '\\,"()[]'})


def channel_value(value: str) -> str:
    """What a variable set to `value` holds on the channel: control characters cannot be
    sent (a newline would end the AGI command), so they are dropped."""
    return value if value.isprintable() else _UNSAFE_VALUE.sub("", value)


def array_value(values: Sequence[str]) -> str:
    """The value for `ARRAY(v1,v2,...)`: each value escaped for Asterisk's splitter
    (so a comma, quote or parenthesis in it stays literal), joined by commas."""
    return ",".join(channel_value(v).translate(_ARRAY_ESCAPES) for v in values)


def get_variable(name: str) -> bytes:
    """Asterisk answers `200 result=1 (value)`, or `200 result=0` when it is not set."""
    return f"GET VARIABLE {name}\n".encode()


def set_variables(pairs: Sequence[tuple[str, str]], *, one_command: bool = True) -> list[bytes]:
    """The commands that set `pairs` on the channel. With `one_command`, one round trip:
    `SET VARIABLE ARRAY(N1,N2,...) "v1,v2,..."` - res_agi hands a name ending in `)` to
    the dialplan function (pbx_builtin_setvar_helper -> ast_func_write) and ARRAY()
    sets each variable, an empty value included. Otherwise (or when the line would
    not fit Asterisk's command buffer) one SET VARIABLE per variable."""
    if one_command and len(pairs) > 1:
        names = ",".join(n for n, _ in pairs)
        line = f"SET VARIABLE ARRAY({names}) {quote(array_value([v for _, v in pairs]))}\n".encode()
        if len(line) <= MAX_COMMAND_BYTES:
            return [line]
    return [set_variable(n, v) for n, v in pairs]


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str
    hangup: bool = False  # Asterisk said HANGUP before this reply: the channel is gone

    @property
    def ok(self) -> bool:
        return self.code == 200


class ReplyParser:
    """Reply lines in, Replies out: skips `HANGUP` (noting it), folds `520-` multi-line
    usage texts into one reply."""

    __slots__ = ("_hangup", "_multi", "_first")

    def __init__(self) -> None:
        self._hangup = False
        self._multi: int | None = None
        self._first = ""

    @property
    def idle(self) -> bool:
        """No HANGUP seen and not inside a multi-line reply."""
        return not self._hangup and self._multi is None

    def feed(self, line: str) -> Reply | None:
        line = line.rstrip("\r\n")
        if self._multi is not None:
            if line.startswith(f"{self._multi} "):
                r = Reply(self._multi, self._first, self._hangup)
                self._multi, self._hangup = None, False
                return r
            return None
        if line == "HANGUP":
            self._hangup = True
            return None
        if not line:
            return None
        if len(line) >= 3 and line[:3].isdigit():
            code = int(line[:3])
            if line[3:4] == "-":
                self._multi, self._first = code, line[4:]
                return None
            r = Reply(code, line[4:], self._hangup)
        else:
            r = Reply(0, line, self._hangup)
        self._hangup = False
        return r
