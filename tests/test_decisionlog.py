"""The route decision log written by its own process (what the daemon runs): decisions
made by the real FastAGI server, stored by a real child process in the real store, on
SQLite and PostgreSQL - through a child that is killed, signalled, or cannot open the
database."""
import asyncio
import logging
import os
import pickle
import signal
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from callrouter.agi.decisionlog import MAX_FRAME_BYTES, DecisionLogProcess, LoggedDecision, _frames, _LENGTH
from agisim import agi_call, route_request
from callrouter.agi.server import Answered, FastAgiServer
from callrouter.config import AgiConfig
from callrouter.presence import Presence
from callrouter.routing.lookup import PhoneDirectory
from callrouter.routing.router import Router
from callrouter.routing.rules import RuleSet
from callrouter.store import Client
from callrouter.store.schema import Lead, RouteDecision

SHIPPED_RULES = Path(__file__).resolve().parents[1] / "rules"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HOST = "127.0.0.1"
IVAN = Client(id="c-1001", name="Ivan Petrov", owner_extension="101", monthly_turnover=120_000,
              phones=("+79161234567",))


@asynccontextmanager
async def routing_with(recorder):
    router = Router(RuleSet(SHIPPED_RULES), PhoneDirectory.from_clients([IVAN]), Presence())
    srv = FastAgiServer(router, AgiConfig(deadline_ms=300), recorder=recorder, host=HOST, port=0,
                        clock=lambda: MONDAY_10)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def call(srv, caller: str, linkedid: str):
    res = await agi_call(HOST, srv.port, route_request(caller, linkedid=linkedid))
    assert res.closed_by_server and res.variables["ROUTE_DIAL"]
    return res


async def rows(store, table):
    async with store.engine.connect() as conn:
        return (await conn.execute(select(table))).all()


async def test_decisions_and_leads_are_stored_by_the_child_process(store, store_url):
    log = DecisionLogProcess(store_url, linger=0.01)
    log.start()
    async with routing_with(log) as srv:
        await call(srv, "89161234567", "1.1")
        await call(srv, "74950000001", "1.2")          # unknown caller: a lead
        await asyncio.gather(*(call(srv, "89161234567", f"2.{n}") for n in range(20)))
    await log.flush()
    assert log.pending == 0
    stored = await rows(store, RouteDecision)
    assert len(stored) == 22 and {r.linkedid for r in stored} == {"1.1", "1.2", *(f"2.{n}" for n in range(20))}
    owner = next(r for r in stored if r.linkedid == "1.1")
    assert (owner.reason, owner.dial, owner.client_id, owner.caller_raw) == ("owner", "PJSIP/101", "c-1001",
                                                                             "89161234567")
    assert owner.decided_at == MONDAY_10
    assert owner.trace["outcome"] == "answered" and owner.trace["steps"] and owner.latency_ms >= 0
    assert [(lead.phone, lead.call_id) for lead in await rows(store, Lead)] == [("+74950000001", "1.2")]
    assert log.stats["decisions"] == 22 and log.stats["leads"] == 1 and log.stats["dropped"] == 0
    await log.close()
    assert log.stats["restarts"] == 0


async def test_a_killed_child_is_restarted_and_nothing_is_lost(store, store_url):
    log = DecisionLogProcess(store_url, linger=0.01, restart_delay=0.05)
    log.start()
    async with routing_with(log) as srv:
        for n in range(5):
            await call(srv, "89161234567", f"a.{n}")
        await log.flush()
        first = log._proc
        first.send_signal(signal.SIGSTOP)  # the writer hangs: decisions go out and are not acknowledged
        for n in range(5):
            await call(srv, "89161234567", f"b.{n}")
        for _ in range(100):
            if log.pending == 5 and not log._queued:
                break
            await asyncio.sleep(0.02)
        assert len(log._unacked) == 5     # in the pipe, not yet stored
        first.kill()                       # ... and dies: the daemon goes on answering calls
        await call(srv, "89161234567", "c.0")
        await asyncio.wait_for(log.flush(), 30)
    assert log._proc is not None and log._proc.pid != first.pid
    stored = [r.linkedid for r in await rows(store, RouteDecision)]
    assert sorted(stored) == sorted([*(f"a.{n}" for n in range(5)), *(f"b.{n}" for n in range(5)), "c.0"])
    # the five in the pipe, and c.0 if it was written before the death was noticed
    assert log.stats["restarts"] == 1 and log.stats["resent"] in (5, 6) and log.stats["decisions"] == 11
    await log.close()


async def test_the_child_ignores_sigterm_and_ends_when_the_daemon_closes_it(store, store_url):
    log = DecisionLogProcess(store_url, linger=0.01)
    log.start()
    async with routing_with(log) as srv:
        await call(srv, "89161234567", "t.1")
        await log.flush()
        proc = log._proc
        os.kill(proc.pid, signal.SIGTERM)  # as systemd sends to the whole group on stop
        await asyncio.sleep(0.2)
        assert proc.returncode is None
        await call(srv, "89161234567", "t.2")
    await log.close()
    assert proc.returncode == 0 and log.stats["restarts"] == 0
    assert {r.linkedid for r in await rows(store, RouteDecision)} == {"t.1", "t.2"}


async def test_an_unusable_database_bounds_memory_and_says_why(tmp_path, caplog):
    unmigrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"   # the child refuses it and exits
    log = DecisionLogProcess(unmigrated, maxsize=3, linger=0.01, restart_delay=0.05)
    log.start()
    with caplog.at_level(logging.ERROR, logger="callrouter.agi.decisionlog"):
        async with routing_with(log) as srv:
            for n in range(5):
                await call(srv, "89161234567", f"x.{n}")  # every call is still answered
            assert log.pending == 3 and log.stats["dropped"] == 2
            for _ in range(200):
                if log.stats["restarts"] >= 2:
                    break
                await asyncio.sleep(0.05)
        await log.close(timeout=0.5)
    assert log.stats["restarts"] >= 2 and log.stats["decisions"] == 0
    assert "route decision log process exited" in caplog.text
    assert "route decision log is full" in caplog.text


def test_a_logged_decision_makes_the_row_and_the_lead():
    from callrouter.routing.engine import RouteDecision as Decision

    decision = Decision(rule="unknown-caller", reason="unknown-caller", dial="Local/leads@queues", timeout=20,
                        caller="+74950000001", lead=True, trace=("no client",))
    item = Answered(pbx="office", linkedid="", uniqueid="", channel="PJSIP/trunk-1", caller_raw="74950000001",
                    decision=decision, routed=None, decided_at=MONDAY_10, latency_ms=0.1234, answer_ms=0.5,
                    outcome="answered")
    logged = LoggedDecision(*LoggedDecision.of(item))  # as the child gets it back from the pipe
    row = logged.row()
    assert (row.pbx, row.linkedid, row.decided_at, row.rule, row.fallback, row.latency_ms) == (
        "office", "unknown", MONDAY_10, "unknown-caller", None, 0.123)
    assert row.trace["steps"] == ["no client"] and row.trace["lead"] is True
    assert logged.lead() == ("office", "+74950000001", "74950000001", None)


def test_an_oversized_frame_is_skipped_not_fatal():
    """A frame no daemon would send must not stop the log: skipped, even when it
    arrives in pieces, and the frames after it are read."""
    good = [pickle.dumps(("x", n)) for n in range(3)]
    stream = (_LENGTH.pack(len(good[0])) + good[0] + _LENGTH.pack(MAX_FRAME_BYTES + 10)
              + b"z" * (MAX_FRAME_BYTES + 10) + b"".join(_LENGTH.pack(len(g)) + g for g in good[1:]))
    buf, state, frames, skipped = bytearray(), {"skip": 0}, [], 0
    for k in range(0, len(stream), 300_000):  # as the pipe delivers it
        buf += stream[k:k + 300_000]
        got, n = _frames(buf, state)
        frames += got
        skipped += n
    assert frames == good and skipped == 1 and not buf and state["skip"] == 0
