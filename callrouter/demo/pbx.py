"""The demo's PBX: recorded Asterisk calls replayed over real AMI and FastAGI.

`DemoPbx` is an AMI server (the banner, Login, Ping, the reporting lists answered empty)
that writes a call's events to every logged-in client; `Scenario` is one recorded call
(shipped in `scenarios/`, captured from a real Asterisk 22: the AMI stream and the
FastAGI request its dialplan made); `play` makes a fresh copy of one - new uniqueids,
linkedids, bridge ids and channel names, times shifted to now, the caller swapped for
another number - asks the daemon's router where it goes, as the dialplan does, then
writes the call's events at the pace they were recorded. Adapted from the tests'
fake AMI server and FastAGI simulator (tests/fakeami.py, tests/agisim.py), which stay
the tests' own.
"""
from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from importlib import resources

log = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
# what the recordings' ids look like: <unix seconds>.<counter>
_ID = re.compile(r"(?<!Timestamp: )\b(1795370\d{3})\.(\d+)\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_CHAN_SEQ = re.compile(r"(?<=[A-Za-z0-9@_.])-([0-9a-f]{8})(?=;[12]|\r|,|\s|$)")
_TIMESTAMP = re.compile(r"^Timestamp: ([0-9.]+)\r$", re.M)
# the extensions a recorded call dials (`Local/101@phones`, `PJSIP/101`), in order
_DIALLED = re.compile(r"^DestChannel: (?:Local|PJSIP|SIP)/(\d{2,5})[@-]", re.M)  # not the DID
# a variable the router set, as a VarSet event shows it
_VARSET = re.compile(r"^(Variable: ([A-Z_]+)\r\nValue: )([^\r]*)(\r)$", re.M)
_LISTS = {"coreshowchannels": "CoreShowChannelsComplete", "bridgelist": "BridgeListComplete",
          "devicestatelist": "DeviceStateListComplete", "extensionstatelist": "ExtensionStateListComplete"}


@dataclass(frozen=True)
class Scenario:
    name: str
    frames: tuple[tuple[float, str], ...]   # (t from the capture's start, raw AMI frame)
    request: str                            # the FastAGI header block the dialplan sent
    caller: str                             # the caller number as the recording has it
    origin: float                           # the earliest Timestamp header: "now" in a fresh copy
    agents: tuple[str, ...] = ()            # the extensions it dials, in order

    @classmethod
    def load(cls, name: str) -> Scenario:
        base = resources.files("callrouter.demo") / "scenarios"
        frames = tuple((float(o.get("t") or 0.0), o["raw"]) for o in _jsonl(base / f"{name}.ami.jsonl.gz"))
        request = with_linkedid(next(iter(_jsonl(base / f"{name}.agi.jsonl.gz")))["request"], frames)
        caller = next((line.split(":", 1)[1].strip() for line in request.split("\n")
                       if line.startswith("agi_callerid:")), "")
        stamps = [float(m.group(1)) for _, raw in frames for m in _TIMESTAMP.finditer(raw)]
        agents = dict.fromkeys(m.group(1) for _, raw in frames for m in _DIALLED.finditer(raw))
        return cls(name, frames, request, caller, min(stamps, default=0.0), tuple(agents))


def with_linkedid(request: str, frames: tuple[tuple[float, str], ...]) -> str:
    """The request as the shipped dialplan makes it: `AGI(agi://…/route,${CHANNEL(linkedid)})`
    passes the call's linkedid as agi_arg_1 (the recordings' dialplan passed none). The
    router keys its decision by it, which is how a pop and a record find their route."""
    env = dict(line.split(": ", 1) for line in request.split("\n") if ": " in line)
    unique = env.get("agi_uniqueid", "")
    if "agi_arg_1" in env or not unique:
        return request
    for _, raw in frames:
        m = re.search(rf"^Uniqueid: {re.escape(unique)}\r\nLinkedid: ([^\r]+)\r$", raw, re.M)
        if m:
            return request.rstrip("\n") + f"\nagi_arg_1: {m.group(1)}\n\n"
    return request


def _jsonl(path) -> list[dict]:
    with gzip.open(path.open("rb"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Freshener:
    """One call's copy: every id, bridge and channel name unique to it, times from `start`."""

    _n = itertools.count(1)

    def __init__(self, start: float, origin: float, caller_from: str, caller_to: str,
                 agents: dict[str, str] | None = None):
        n = next(self._n)
        self.prefix = str(int(start) * 1000 % 10**10 + n)   # unique across calls of one demo run
        self.seq = n
        self.start = start
        self.origin = origin
        self.bridges: dict[str, str] = {}
        self.caller_from, self.caller_to = caller_from, caller_to
        # another manager's phone rings where the recording rang one (101 -> 105): the
        # extension wherever it stands alone (`Local/101@phones`, `Exten: 101`), never
        # inside an id, a time, a hex channel sequence or a phone number
        self.agents = {k: v for k, v in (agents or {}).items() if k != v}
        self._agent = (re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, self.agents)) + r")(?![\w.])")
                       if self.agents else None)
        self.answers: dict[str, str] = {}   # what the router set for this copy: its VarSets show it

    def __call__(self, raw: str) -> str:
        raw = _ID.sub(lambda m: f"{self.prefix}.{m.group(2)}", raw)  # not Timestamps: they look alike
        raw = _UUID.sub(lambda m: self.bridges.setdefault(m.group(0), str(uuid.uuid4())), raw)
        raw = _CHAN_SEQ.sub(lambda m: f"-{(int(m.group(1), 16) + self.seq * 4096) % 2**32:08x}", raw)
        raw = _TIMESTAMP.sub(self._time, raw)
        if self._agent is not None:
            raw = self._agent.sub(lambda m: self.agents[m.group(1)], raw)
        if self.answers and raw.startswith("Event: VarSet"):
            raw = _VARSET.sub(lambda m: m.group(1) + self.answers[m.group(2)] + m.group(4)
                              if m.group(2) in self.answers else m.group(0), raw)
        if self.caller_from.isdigit() and self.caller_to:
            raw = raw.replace(self.caller_from, self.caller_to)
        return raw

    def _time(self, m: re.Match) -> str:
        return f"Timestamp: {self.start + float(m.group(1)) - self.origin:.6f}\r"


class DemoPbx:
    """The AMI side: any login is accepted; events go to every logged-in client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.calls = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._clients):
            w.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def emit(self, raw: str) -> None:
        data = raw.encode()
        for w in list(self._clients):
            w.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                h = {}
                for line in block.decode("utf-8", "replace").split("\r\n"):
                    k, sep, v = line.partition(":")
                    if sep:
                        h.setdefault(k.strip().lower(), v.strip())
                action, aid = h.get("action", "").lower(), h.get("actionid", "")
                if action == "login":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n"
                                 .encode())
                    self._clients.add(writer)
                elif action == "ping":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                                 f"Timestamp: {time.time():.6f}\r\n\r\n".encode())
                elif action in _LISTS:  # nothing up at this PBX between calls we replay
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"
                                 f"Event: {_LISTS[action]}\r\nActionID: {aid}\r\nEventList: Complete\r\n"
                                 f"ListItems: 0\r\n\r\n".encode())
                elif action == "logoff":
                    writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                    break
                else:
                    writer.write(f"Response: Error\r\nActionID: {aid}\r\nMessage: Invalid/unknown command\r\n\r\n"
                                 .encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    # ------------------------------------------------------------------ one call
    async def play(self, scenario: Scenario, agi_port: int, caller: str, *, agents: dict[str, str] | None = None,
                   agi_host: str = "127.0.0.1",
                   timeout: float = 5.0) -> None:
        """The call: its route request (as the dialplan makes it), then its events, paced."""
        fresh = Freshener(time.time(), scenario.origin, scenario.caller, caller, agents)
        self.calls += 1
        try:
            fresh.answers = await asyncio.wait_for(_agi(agi_host, agi_port, fresh(scenario.request).encode()),
                                                   timeout)
        except (OSError, TimeoutError) as e:  # the dialplan's fallback takes the call: play it anyway
            log.warning("demo PBX: the router did not answer %s (%s)", scenario.name, e)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for t, raw in scenario.frames:
            delay = t0 + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.emit(fresh(raw))


async def _agi(host: str, port: int, request: bytes) -> dict[str, str]:
    """Asterisk's side of FastAGI: the header block, `200 result=1` to every command
    (GET VARIABLE answered with what was set), until the router closes. Returns the
    variables set."""
    reader, writer = await asyncio.open_connection(host, port)
    got: dict[str, str] = {}
    try:
        writer.write(request)
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").strip()
            if text.upper().startswith("GET VARIABLE"):
                value = got.get(text.split()[-1])
                writer.write(b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode())
                continue
            got.update(set_variables(text))
            writer.write(b"200 result=1\n")
    finally:
        writer.close()
    return got


_SET_ARRAY = re.compile(r'^SET VARIABLE ARRAY\(([^)]*)\) "(.*)"$')
_SET_ONE = re.compile(r'^SET VARIABLE ([A-Za-z0-9_]+) "(.*)"$')


def set_variables(command: str) -> dict[str, str]:
    """The variables one SET VARIABLE command sets, as Asterisk reads them: ARRAY()'s
    values split at unescaped commas, `\\x` read as `x`."""
    m = _SET_ARRAY.match(command)
    if m:
        values, cur, chars = [], [], iter(m.group(2))
        for ch in chars:
            if ch == "\\":
                cur.append(next(chars, ""))
            elif ch == ",":
                values.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        values.append("".join(cur))
        return dict(zip(m.group(1).split(","), values))
    m = _SET_ONE.match(command)
    if m:
        return {m.group(1): re.sub(r"\\(.)", r"\1", m.group(2))}
    return {}
