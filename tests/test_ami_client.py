"""AmiSource against FakeAmi over real TCP: recordings arrive intact, bad input is skipped,
connections recover, slow consumers lose nothing, secrets stay secret."""
from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from pathlib import Path

import pytest
from pydantic import SecretStr

from callrouter.ami import client as client_mod
from callrouter.ami.capture import parse_raw_frame, read_events
from callrouter.ami.client import AmiConnectError, AmiLoginError, AmiSource, Backoff
from callrouter.ami.events import Shutdown, StreamGap, Unknown, parse_event
from callrouter.ami.framing import FrameSplitter, Oversized
from callrouter.config import PbxConfig

from fakeami import FakeAmi, load_recording
from loopticks import LoopTicks

pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
RECORDINGS = sorted(FIXTURES.glob("*.ami.jsonl"))
OWNER = FIXTURES / "answered_owner.ami.jsonl"
SECRET = "s3cr3t-Do-Not-Log-7d1f"
CAP = 64 * 1024


def pbx(port: int, **kw) -> PbxConfig:
    opts = dict(host="127.0.0.1", port=port, username="callrouter", secret=SecretStr(SECRET),
                connect_timeout=1.0, reconnect_min=0.01, reconnect_max=0.05, max_frame_bytes=CAP)
    opts.update(kw)
    return PbxConfig(**opts)


async def take(source: AmiSource, n: int) -> list:
    """The next n events (a hang guard, not a timing assertion)."""
    out: list = []
    if n == 0:
        return out
    async with asyncio.timeout(10):
        async with aclosing(source.events()) as events:
            async for event in events:
                out.append(event)
                if len(out) == n:
                    break
    return out


def typed(frames: list[str]) -> list:
    return [parse_event(parse_raw_frame(f)) for f in frames]


# ---------------------------------------------------------------- recordings


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name.split(".")[0])
async def test_recording_arrives_as_the_capture_reader_reads_it(path):
    expected = list(read_events(path))
    async with FakeAmi(load_recording(path)) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, len(expected))
        stats = source.stats
    assert got == expected
    assert stats.events == len(expected) and stats.malformed == 0 and stats.reconnects == 0
    assert fake.connections == 1 and fake.logins == ["callrouter"]


# ---------------------------------------------------------------- bad input


async def test_bad_frames_are_logged_counted_and_skipped(caplog):
    good = load_recording(OWNER)[:6]
    frames = [
        good[0], good[1],
        "garbage line\r\nmore garbage\r\n\r\n",  # no Event header
        "Event: SomethingAsteriskAddsLater\r\nFoo: bar\r\n\r\n",  # unknown: kept, not an error
        good[2],
        "Event: Hangup\r\nChannel: PJSIP/101-00000001\r\nCause: 16\r\n\r\n",  # no Uniqueid
        b"\x00\xff\xfe\x80binary\r\n\r\n",  # not even text
        "Event: Hangup\r\nChannel: PJSIP/101-00000001\r\nUniqueid: 1.1\r\nCause: sixteen\r\n\r\n",
        good[3], good[4], good[5],
    ]
    async with FakeAmi(frames) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, 7)
        stats = source.stats
    new = [e for e in got if isinstance(e, Unknown) and e.name == "SomethingAsteriskAddsLater"]
    assert len(new) == 1 and got.index(new[0]) == 2  # kept, in stream order
    assert [e for e in got if e is not new[0]] == typed(good)
    assert stats.malformed == 4 and stats.reconnects == 0 and fake.connections == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no Event header" in m for m in warnings)
    assert any("Hangup lacks Uniqueid" in m for m in warnings)
    assert any("Cause is not an integer" in m for m in warnings)


async def test_an_unexpected_error_handling_one_frame_is_contained(caplog, monkeypatch):
    frames = load_recording(OWNER)[:8]
    real = client_mod.parse_headers  # the client's parser: frame_headers' view -> event

    def flaky(view, fallback_time=None):
        if view.get("Event") == "Newchannel":
            raise RuntimeError("bug in a parser")
        return real(view, fallback_time)

    monkeypatch.setattr(client_mod, "parse_headers", flaky)
    expected = [e for e in typed(frames) if type(e).__name__ != "Newchannel"]
    async with FakeAmi(frames) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, len(expected))
        stats = source.stats
    assert got == expected
    assert stats.malformed == len(frames) - len(expected) > 0
    assert stats.reconnects == 0 and fake.connections == 1
    assert any("RuntimeError: bug in a parser" in r.getMessage() for r in caplog.records)


async def test_a_10mb_header_line_is_dropped_and_memory_stays_bounded(caplog):
    good = load_recording(OWNER)[:5]
    huge = b"Event: VarSet\r\nValue: " + b"x" * (10 * 1024 * 1024) + b"\r\n\r\n"
    frames = [good[0], good[1], huge, good[2], good[3], good[4]]
    async with FakeAmi(frames) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, 5)
        stats = source.stats
    assert got == typed(good)
    assert stats.oversized == 1 and stats.malformed == 0
    assert 0 < stats.peak_buffer <= CAP
    assert stats.reconnects == 0 and fake.connections == 1
    warning = next(r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING and "max_frame_bytes" in r.getMessage())
    assert f"max_frame_bytes={CAP}" in warning and "Event: VarSet" in warning


def test_framer_gives_the_same_frames_however_the_stream_is_cut():
    frames = [f.encode() for f in load_recording(OWNER)]
    stream = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(frames)
    expected = [f[:-4] for f in frames]
    for size in (1, 2, 3, 5, 64, 4096, len(stream)):
        splitter = FrameSplitter(CAP)
        got = []
        for i in range(0, len(stream), size):
            got += splitter.feed(stream[i:i + size])
        assert [bytes(g) for g in got] == expected, size
        assert splitter.banner == "Asterisk Call Manager/11.0.0" and splitter.pending == 0


def test_framer_discards_an_oversized_frame_through_its_blank_line_even_when_split():
    splitter = FrameSplitter(4096, banner=None)
    out = splitter.feed(b"Event: A\r\n\r\nJunk: " + b"y" * 5000)
    assert out[0] == b"Event: A" and isinstance(out[1], Oversized) and out[1].head.startswith(b"Junk: y")
    assert splitter.pending <= 4096
    for chunk in (b"y" * 100_000, b"yyy\r", b"\n\r", b"\nEvent: B\r\n", b"\r\n"):  # separator split 3 ways
        out += splitter.feed(chunk)
        assert splitter.pending <= 4096
    assert out[2:] == [b"Event: B"] and len(out) == 3


# ---------------------------------------------------------------- consumer


async def test_an_exception_in_the_consumer_does_not_kill_the_connection():
    expected = list(read_events(OWNER))
    async with FakeAmi(load_recording(OWNER)) as fake, AmiSource(pbx(fake.port)) as source:
        got: list = []
        with pytest.raises(RuntimeError, match="consumer bug"):
            async with aclosing(source.events()) as events:
                async for event in events:
                    got.append(event)
                    if len(got) == 10:
                        raise RuntimeError("consumer bug")
        got += await take(source, len(expected) - len(got))
        assert source.connected
    assert got == expected and fake.connections == 1


async def test_a_slow_consumer_with_a_tiny_queue_gets_every_event_in_order():
    path = FIXTURES / "burst.ami.jsonl"
    expected = list(read_events(path))
    async with FakeAmi(load_recording(path)) as fake, AmiSource(pbx(fake.port), queue_size=4) as source:
        got: list = []
        async with asyncio.timeout(20), aclosing(source.events()) as events:
            async for event in events:
                got.append(event)
                await asyncio.sleep(0)  # let the socket side run: it must wait for us
                if len(got) == len(expected):
                    break
        stats = source.stats
    assert got == expected
    assert stats.pauses > 0  # reading was paused: the backpressure reached the socket
    assert stats.reconnects == 0 and fake.connections == 1


async def _ticks_while_taking(monkeypatch, slice_seconds: float) -> tuple[int, list, list]:
    """Every event of the recorded burst (5,800 frames) arriving in one socket read (handed
    to the connection's protocol as one), beside a task that counts the event loop's turns
    meanwhile. The client's clock is a fake one
    that each look at it moves on by 30 % of READ_SLICE_SECONDS (no timing is measured)."""
    path = FIXTURES / "burst.ami.jsonl"
    expected = list(read_events(path))
    now = [0.0]
    step = client_mod.READ_SLICE_SECONDS * 0.3

    def clock() -> float:
        now[0] += step
        return now[0]
    monkeypatch.setattr(client_mod, "_clock", clock)
    monkeypatch.setattr(client_mod, "READ_SLICE_SECONDS", slice_seconds)
    frames = [f.encode() for f in load_recording(path)]
    async with FakeAmi([]) as fake, AmiSource(pbx(fake.port), snapshot_on_login=False) as source:
        async with asyncio.timeout(10):
            while not (source.connected and fake.logins):
                await asyncio.sleep(0.01)
        async with LoopTicks() as ticks:
            source._proto.data_received(b"".join(frames))  # one read of the whole burst
            got = await take(source, len(expected))
    return ticks.during, got, expected


async def test_a_large_socket_read_is_handled_in_time_slices(monkeypatch):
    """A read of many frames does not hold the event loop: past READ_SLICE_SECONDS the rest
    of the read waits for a later loop turn (reading paused), every event still in order."""
    ticks, got, expected = await _ticks_while_taking(monkeypatch, client_mod.READ_SLICE_SECONDS)
    assert got == expected
    assert ticks >= len(expected) // 5, (ticks, len(expected))


async def test_without_the_read_slice_a_read_is_handled_in_one_go(monkeypatch):
    """The check above can fail: with the slice out of reach the loop turns about once per
    socket read, far fewer times."""
    ticks, got, expected = await _ticks_while_taking(monkeypatch, 10.0**9)
    assert got == expected
    assert ticks < len(expected) // 5, (ticks, len(expected))


# ---------------------------------------------------------------- connection


async def test_login_rejected_is_a_clear_error_without_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    async with FakeAmi(secret="the-right-one") as fake:
        async with AmiSource(pbx(fake.port), max_attempts=2) as source:
            with pytest.raises(AmiLoginError) as err:
                await take(source, 1)
    message = str(err.value)
    assert f"127.0.0.1:{fake.port}" in message and "'callrouter'" in message and "rejected" in message
    assert "Authentication failed" in message
    assert fake.rejected == 2  # retried once, with backoff, then gave up
    assert source.stats.connect_failures == 2
    assert SECRET not in message and SECRET not in repr(err.value)
    assert SECRET not in caplog.text
    assert any(r.levelno == logging.ERROR and "rejected" in r.getMessage() for r in caplog.records)


async def test_nothing_listening_is_a_clear_connect_error():
    async with FakeAmi() as fake:
        port = fake.port
    async with AmiSource(pbx(port), max_attempts=2) as source:
        with pytest.raises(AmiConnectError, match=f"127.0.0.1:{port}: cannot connect"):
            await take(source, 1)


async def test_dropped_connection_reconnects_and_marks_the_gap():
    frames = load_recording(OWNER)
    expected = list(read_events(OWNER))
    async with FakeAmi(frames, drop_after=[40]) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, len(expected) + 1)
        stats = source.stats
    assert got[:40] == expected[:40]
    gap = got[40]
    assert isinstance(gap, StreamGap) and gap.reason == "connection closed by the PBX" and gap.time
    assert got[41:] == expected[40:]
    assert fake.connections == 2 and fake.logins == ["callrouter", "callrouter"]
    assert stats.reconnects == 1 and stats.events == len(expected)


async def test_unanswered_ping_drops_the_connection():
    frames = load_recording(OWNER)[:3]
    async with FakeAmi(frames, answer_ping=False) as fake:
        async with AmiSource(pbx(fake.port), ping_interval=0.02, ping_timeout=0.05) as source:
            got = await take(source, 4)
    assert got[:3] == typed(frames)
    assert isinstance(got[3], StreamGap) and "no reply to Ping" in got[3].reason
    assert fake.connections >= 2 and fake.pings >= 1


async def test_a_pbx_still_sending_is_not_dropped_for_a_late_pong():
    """The Pong may wait behind a burst of events we have not read yet: while data keeps
    coming the link is alive and is kept (dropping it would lose the events); once the
    PBX goes silent without answering, it is dropped as before."""
    frames = load_recording(OWNER)[:40]
    paced = [(i * 0.05, raw) for i, raw in enumerate(frames)]  # 2 s of events, 4 ping timeouts
    async with FakeAmi(paced, answer_ping=False, speed=1.0) as fake:
        async with AmiSource(pbx(fake.port), ping_interval=0.05, ping_timeout=0.5) as source:
            got = await take(source, 40)
            connections_while_flowing = fake.connections
            got += await take(source, 1)
    assert got[:40] == typed(frames)  # every event, on one connection
    assert connections_while_flowing == 1 and fake.pings >= 1
    assert isinstance(got[40], StreamGap) and "no reply to Ping" in got[40].reason


async def test_answered_pings_keep_the_connection():
    async with FakeAmi(load_recording(OWNER)[:3]) as fake:
        async with AmiSource(pbx(fake.port), ping_interval=0.01, ping_timeout=0.5) as source:
            await take(source, 3)
            async with asyncio.timeout(5):
                while fake.pings < 5:
                    await asyncio.sleep(0.01)
            assert source.connected
    assert fake.connections == 1 and source.stats.reconnects == 0


async def test_a_shutdown_event_is_delivered_then_the_source_reconnects():
    frames = load_recording(OWNER)[:2] + ["Event: Shutdown\r\nPrivilege: system,all\r\n"
                                          "Shutdown: Cleanly\r\nRestart: True\r\n\r\n"]
    async with FakeAmi(frames, drop_after=[3]) as fake, AmiSource(pbx(fake.port)) as source:
        got = await take(source, 4)
    assert got[:2] == typed(frames[:2])
    assert isinstance(got[2], Shutdown) and isinstance(got[3], StreamGap)
    assert fake.connections == 2


def test_backoff_grows_within_bounds_and_resets():
    backoff = Backoff(0.5, 30.0)
    waits = [backoff.next() for _ in range(12)]
    assert waits[0] == 0.5 and all(0.5 <= w <= 30.0 for w in waits)
    assert all(w <= 0.5 * 2 ** n for n, w in enumerate(waits))  # never above the n-th cap
    backoff.reset()
    assert backoff.next() == 0.5


def test_what_panoramisk_logs_about_an_action_is_redacted(caplog):
    # panoramisk logs 'Fail to send %r' with the whole action on a write error
    client_mod._panoramisk_log.error("Fail to send %r", {"Action": "Login", "Secret": SECRET})
    client_mod._panoramisk_log.error("Action: Login\r\nSecret: %s\r\n", SECRET)
    assert SECRET not in caplog.text and caplog.text.count("***") == 2


# ---------------------------------------------------------------- lifecycle


async def test_close_while_paused_ends_the_stream_and_leaves_nothing_running():
    async with FakeAmi(load_recording(FIXTURES / "burst.ami.jsonl")) as fake:
        async with AmiSource(pbx(fake.port), queue_size=2) as source:
            await take(source, 5)  # the queue is full again: reading is paused, the server waits
        rest = await take(source, 10**9)  # what was already read still comes, then the end
        assert len(rest) < 5800 - 5
        assert not source.connected
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_close_during_backoff_and_a_waiting_consumer_ends_cleanly():
    async with FakeAmi() as fake:
        port = fake.port
    source = AmiSource(pbx(port, reconnect_min=30, reconnect_max=60))
    async with source:
        consumer = asyncio.create_task(take(source, 1))
        async with asyncio.timeout(5):
            while source.stats.connect_failures == 0:
                await asyncio.sleep(0.01)
    assert await consumer == []  # the iterator ended, no error
    assert asyncio.all_tasks() == {asyncio.current_task()}
