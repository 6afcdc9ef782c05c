"""Fuzzing the FastAGI server (issue 14, item 6b): generated and mutated request headers
(from the recorded Asterisk requests) against one real server on 127.0.0.1 port 0: no
`agi_network_script`, garbage and binary lines, NUL, invalid UTF-8, huge lines, no blank
line, a half-close, slowloris-style partial input. For each: the server answers (commands
only) or closes; a client that stops talking is cut at the server's deadline (the probe
gives up after HANG s, a hang detector, not a timing assertion); nothing inside fails (no
`default-error`, no ERROR log, no exception reaching the event loop); and the next good
request still routes by the rules."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agisim import agi_call, route_request
from callrouter.agi.server import FastAgiServer
from callrouter.config import AgiConfig
from callrouter.routing.lookup import PhoneDirectory
from callrouter.routing.presence import Presence
from callrouter.routing.router import Router
from callrouter.routing.rules import RuleSet
from callrouter.store import Client
from fuzzing import fuzz

FIX = Path(__file__).parent / "fixtures" / "asterisk"
RULES = Path(__file__).resolve().parents[1] / "rules"
HOST = "127.0.0.1"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HANG = 10.0  # s: far beyond deadline + reply timeout; only a hang gets here


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Served:
    """The server on its own loop in a thread, so hypothesis's synchronous examples can
    talk to it (hypothesis runs no async test functions)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        directory = PhoneDirectory.from_clients([Client(id="c-1001", name="Ivan Petrov", owner_extension="101",
                                                        monthly_turnover=120_000, phones=("+79161234567",))])
        router = Router(RuleSet(RULES), directory, Presence())
        self.server = FastAgiServer(router, AgiConfig(deadline_ms=150), host=HOST, port=0, reply_timeout=0.3,
                                    clock=lambda: MONDAY_10)  # business hours: the owner rule applies
        self.run(self.server.start())

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.server.close(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    errors = _Errors()
    logging.getLogger("callrouter").addHandler(errors)
    s = Served()
    try:
        yield s
    finally:
        s.close()
        logging.getLogger("callrouter").removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []


async def probe(port: int, parts: list[bytes], pauses: list[float], half_close: bool) -> bytes:
    """Send `parts` (pausing between them), answer every command as Asterisk does, and
    return what the server sent until it closed."""
    r, w = await asyncio.open_connection(HOST, port)
    got = b""
    try:
        async with asyncio.timeout(HANG):
            try:
                for part, pause in zip(parts, pauses + [0.0] * len(parts)):
                    w.write(part)
                    await w.drain()
                    if pause:
                        await asyncio.sleep(pause)
                if half_close:
                    w.write_eof()
            except OSError:  # ConnectionError, or ENOTCONN on the half-close
                pass  # the server may close on an oversized or bad request mid-send
            while True:
                try:
                    line = await r.readline()
                except (ConnectionError, asyncio.LimitOverrunError, ValueError):
                    break
                if not line:
                    break
                got += line
                if not w.is_closing() and not half_close:
                    try:
                        w.write(b"200 result=1\n")
                    except ConnectionError:
                        pass
    finally:
        w.close()
    return got


def recorded_requests() -> list[bytes]:
    out = []
    for path in sorted(FIX.glob("*.agi.jsonl"))[:6]:
        for line in path.read_text().splitlines()[:1]:
            out.append(json.loads(line)["request"].encode())
    return out


RECORDED = recorded_requests()
GARBAGE_LINE = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"agi_callerid: \x00\x00", b"agi_callerid: \xff\xfe\xfd", b"agi_network_script:",
                     b"agi_network_script: ", b"agi_network_script: route?pbx=\xff", b"agi_arg_1: " + b"9" * 5000,
                     b"agi_request: agi://x/route?pbx=nope", b"no colon", b": value", b"agi_: x", b"\r",
                     b"agi_callerid: " + b"7" * 30_000]),
)


@st.composite
def request(draw) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "generated", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=4000))
    if kind == "generated":
        lines = draw(st.lists(st.tuples(st.text("abcdefghijklmnopqrstuvwxyz_0123456789", max_size=20),
                                        st.text(max_size=50)), max_size=30))
        body = b"\n".join(f"agi_{k}: {v}".encode("utf-8", "surrogatepass") for k, v in lines)
    else:
        lines = draw(st.sampled_from(RECORDED)).rstrip(b"\n").split(b"\n")
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["drop", "garbage", "insert", "script", "crlf"]))
            i = draw(st.integers(0, max(0, len(lines) - 1)))
            if op == "drop" and lines:
                del lines[i]
            elif op == "garbage" and lines:
                key = lines[i].partition(b":")[0]
                lines[i] = key + b": " + draw(GARBAGE_LINE)
            elif op == "insert":
                lines.insert(i, draw(GARBAGE_LINE))
            elif op == "script":
                lines = [ln for ln in lines if not ln.startswith(b"agi_network_script")]
            elif op == "crlf":
                lines = [ln + b"\r" for ln in lines]
        body = b"\n".join(lines)
    end = draw(st.sampled_from([b"\n\n", b"\r\n\r\n", b"\n", b"", b"\n\n\n\n"]))
    return body + end


@fuzz(45)
@given(payload=request(), cuts=st.lists(st.integers(0, 1 << 16), max_size=4),
       pause=st.sampled_from([0.0, 0.0, 0.01, 0.04]), half_close=st.booleans())
def test_any_request_is_answered_or_closed_and_the_next_one_routes(served, payload, cuts, pause, half_close):
    points = sorted({c % (len(payload) + 1) for c in cuts})
    parts = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)])]
    got = served.run(probe(served.server.port, parts, [pause] * len(parts), half_close))
    for line in got.splitlines():
        assert line.startswith((b"SET VARIABLE ", b"GET VARIABLE ")), line[:200]
    good = served.run(agi_call(HOST, served.server.port, route_request("+79161234567")))
    assert good.variables["ROUTE_DIAL"] == "PJSIP/101"
    assert served.server.stats["default-error"] == 0
    assert served.loop_errors == []


def test_a_slowloris_is_cut_at_the_deadline_while_others_route(served):
    """Bytes trickling in, never the blank line: dropped when the deadline passes, not
    kept alive by each new byte; a good request meanwhile routes."""
    before = served.server.stats["dropped-stalled"]

    async def trickle() -> bytes:
        r, w = await asyncio.open_connection(HOST, served.server.port)
        try:
            async with asyncio.timeout(HANG):
                for b in b"agi_network: yes\nagi_network_script: route\nagi_callerid: 79161234567\n" * 20:
                    try:
                        w.write(bytes([b]))
                        await w.drain()
                    except ConnectionError:
                        return b""
                    await asyncio.sleep(0.005)
                    if r.at_eof():
                        break
                return await r.read()
        finally:
            w.close()

    async def both():
        slow = asyncio.create_task(trickle())
        good = await agi_call(HOST, served.server.port, route_request("+79161234567"))
        return await slow, good

    got, good = served.run(both())
    assert got == b""  # never answered
    assert good.variables["ROUTE_DIAL"] == "PJSIP/101"
    assert served.server.stats["dropped-stalled"] == before + 1
