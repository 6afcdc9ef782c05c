"""The route decision log written by its own process (what the daemon runs): decisions
made by the real FastAGI server, stored by a real child process in the real store, on
SQLite and PostgreSQL - through a child that is killed, signalled, or cannot open the
database. Plus what both logs share: the RoutedCall on the pipe and the write policy."""
import asyncio
import logging
import os
import pickle
import signal
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from agisim import agi_call, route_request
from callrouter.agi.server import FastAgiServer
from callrouter.config import AgiConfig
from callrouter.decisionlog.inline import InlineDecisionLog
from callrouter.decisionlog.policy import POLICY
from callrouter.decisionlog.process import MAX_FRAME_BYTES, DecisionLogProcess, _frames, _LENGTH
from callrouter.routing.presence import Presence
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.routing.lookup import PhoneDirectory
from callrouter.routing.router import Router
from callrouter.routing.rules import RuleSet
from callrouter.store import Client
from callrouter.store.routing import decision_columns
from callrouter.store.schema import Lead, RouteDecisionRow

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
    supervising = asyncio.create_task(log.run())
    async with routing_with(log) as srv:
        await call(srv, "89161234567", "1.1")
        await call(srv, "74950000001", "1.2")          # unknown caller: a lead
        await asyncio.gather(*(call(srv, "89161234567", f"2.{n}") for n in range(20)))
    await log.flush()
    assert log.pending == 0
    stored = await rows(store, RouteDecisionRow)
    assert len(stored) == 22 and {r.linkedid for r in stored} == {"1.1", "1.2", *(f"2.{n}" for n in range(20))}
    owner = next(r for r in stored if r.linkedid == "1.1")
    assert (owner.reason, owner.dial, owner.client_id, owner.caller_raw) == ("owner", "PJSIP/101", "c-1001",
                                                                             "89161234567")
    assert owner.decided_at == MONDAY_10
    assert owner.trace["outcome"] == "answered" and owner.trace["steps"] and owner.latency_ms >= 0
    assert [(lead.phone, lead.call_id) for lead in await rows(store, Lead)] == [("+74950000001", "1.2")]
    assert log.stats["decisions"] == 22 and log.stats["leads"] == 1 and log.stats["dropped"] == 0
    await log.close()
    await asyncio.wait_for(supervising, 5)  # close() ends run()
    assert log.stats["restarts"] == 0


async def test_a_killed_child_is_restarted_and_nothing_is_lost(store, store_url):
    log = DecisionLogProcess(store_url, linger=0.01, restart_delay=0.05)
    supervising = asyncio.create_task(log.run())
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
    stored = [r.linkedid for r in await rows(store, RouteDecisionRow)]
    assert sorted(stored) == sorted([*(f"a.{n}" for n in range(5)), *(f"b.{n}" for n in range(5)), "c.0"])
    # the five in the pipe, and c.0 if it was written before the death was noticed
    assert log.stats["restarts"] == 1 and log.stats["resent"] in (5, 6) and log.stats["decisions"] == 11
    await log.close()
    await asyncio.wait_for(supervising, 5)  # close() ends run()


async def test_the_child_ignores_sigterm_and_ends_when_the_daemon_closes_it(store, store_url):
    log = DecisionLogProcess(store_url, linger=0.01)
    supervising = asyncio.create_task(log.run())
    async with routing_with(log) as srv:
        await call(srv, "89161234567", "t.1")
        await log.flush()
        proc = log._proc
        os.kill(proc.pid, signal.SIGTERM)  # as systemd sends to the whole group on stop
        await asyncio.sleep(0.2)
        assert proc.returncode is None
        await call(srv, "89161234567", "t.2")
    await log.close()
    await asyncio.wait_for(supervising, 5)  # close() ends run()
    assert proc.returncode == 0 and log.stats["restarts"] == 0
    assert {r.linkedid for r in await rows(store, RouteDecisionRow)} == {"t.1", "t.2"}


async def test_an_unusable_database_bounds_memory_and_says_why(tmp_path, caplog):
    unmigrated = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"   # the child refuses it and exits
    log = DecisionLogProcess(unmigrated, maxsize=3, linger=0.01, restart_delay=0.05)
    supervising = asyncio.create_task(log.run())
    with caplog.at_level(logging.ERROR, logger="callrouter.decisionlog.process"):
        async with routing_with(log) as srv:
            for n in range(5):
                await call(srv, "89161234567", f"x.{n}")  # every call is still answered
            assert log.pending == 3 and log.stats["dropped"] == 2
            for _ in range(200):
                if log.stats["restarts"] >= 2:
                    break
                await asyncio.sleep(0.05)
        await log.close(timeout=0.5)
        await asyncio.wait_for(supervising, 5)  # close() ends run()
    assert log.stats["restarts"] >= 2 and log.stats["decisions"] == 0
    assert "route decision log process exited" in caplog.text
    assert "route decision log is full" in caplog.text


def test_a_routed_call_makes_the_row_and_the_lead():
    decision = RouteDecision(rule="unknown-caller", reason="unknown-caller", dial="Local/leads@queues", timeout=20,
                             caller="+74950000001", lead=True, trace=("no client",))
    call = RoutedCall(pbx="office", linkedid="", uniqueid="", channel="PJSIP/trunk-1", caller_raw="74950000001",
                      decision=decision, decided_at=MONDAY_10, latency_ms=0.1234, answer_ms=0.5,
                      outcome="answered")
    call = pickle.loads(pickle.dumps(call))  # as the child gets it back from the pipe
    row = decision_columns(call)
    assert (row["pbx"], row["linkedid"], row["decided_at"], row["rule"], row["fallback"], row["latency_ms"]) == (
        "office", "unknown", MONDAY_10, "unknown-caller", None, 0.123)
    assert row["trace"]["steps"] == ["no client"] and row["trace"]["lead"] is True
    assert call.lead() == ("office", "+74950000001", "74950000001", None)


def _routed(linkedid: str = "1795370423.504", **decision) -> RoutedCall:
    d = RouteDecision(**({"rule": "owner", "reason": "owner-unavailable→tier:retail", "dial": "Local/retail@queues",
                          "timeout": 20, "fallback": "Local/support@queues", "client_id": "c-1", "client_name": "Ivan",
                          "caller": "+79161234567", "candidates": ("c-1", "c-2"), "owner": "101",
                          "trace": ("caller +79161234567: client c-1", "rule owner: skipped"), "rules_version": 7,
                          "lookup": "index"} | decision))
    return RoutedCall("office", linkedid, "1795370423.505", "PJSIP/trunk-00000001", "89161234567", d,
                      datetime.fromisoformat("2026-11-23T10:00:00.123457+03:00"), 0.4321, 1.25, "answered")


def test_a_routed_call_round_trips_through_pickle_unchanged():
    call = _routed()
    data = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(data)
    assert back == call and back.decision == call.decision and type(back.decision) is RouteDecision
    assert back.decided_at.utcoffset() == call.decided_at.utcoffset()  # the same instant in the same zone
    assert back.decided_at.microsecond == 123457
    assert b"datetime" not in data and b"RouteDecision" not in data  # plain values: cheap on the answer path
    bare = RoutedCall("main", "", "", "", None, RouteDecision("", "default:timeout", "Local/x@y", 20),
                      datetime.fromisoformat("2026-11-23T07:00:00+00:00"), 0.0, 0.0, "hangup")
    assert pickle.loads(pickle.dumps(bare)) == bare


class RefusingStore:
    """A database that refuses every batch."""

    def __init__(self):
        self.tries = 0

    async def save_routing_batch(self, calls):
        self.tries += 1
        raise RuntimeError("the database says no")


async def test_a_batch_the_store_refuses_is_given_up_under_the_policy_and_counted():
    store = RefusingStore()
    failed = []
    log = InlineDecisionLog(store, policy=replace(POLICY, retry_min=0.01, linger=0),
                            on_failed=lambda calls, error: failed.append((list(calls), error)))
    writing = asyncio.create_task(log.run())
    calls = [_routed(f"f.{n}") for n in range(3)]
    assert all(log.submit(c) for c in calls)
    await asyncio.wait_for(log.flush(), 5)
    assert store.tries == POLICY.attempts == 3
    assert [c for c, _ in failed] == [calls] and isinstance(failed[0][1], RuntimeError)
    assert log.stats["decision-failed"] == 3 and log.stats["decisions"] == 0 and log.pending == 0
    await log.close()
    await asyncio.wait_for(writing, 5)  # close() ends run()
    assert not log.submit(_routed("after")) and log.stats["decision-failed"] == 4  # closed: given up, counted


async def test_the_child_gives_up_a_refused_batch_under_the_policy_and_says_so(store, store_url):
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE route_decisions")  # the schema check passes; inserts fail
    log = DecisionLogProcess(store_url, linger=0.01, policy=replace(POLICY, retry_min=0.05))
    supervising = asyncio.create_task(log.run())
    async with routing_with(log) as srv:
        for n in range(3):
            await call(srv, "74950000001", f"r.{n}")
        await asyncio.wait_for(log.flush(), 30)
    assert log.pending == 0 and log.stats["decision-failed"] == 3 and log.stats["decisions"] == 0
    assert log.stats["leads"] == 0 and await rows(store, Lead) == []  # all or nothing: no lead without its decision
    assert log.stats["restarts"] == 0
    await log.close()
    await asyncio.wait_for(supervising, 5)  # close() ends run()


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


class _BrokenSpool:
    """A spool whose writes fail (a full disk): what the spill task hands it is lost."""
    path = "broken-spool.db"
    max_bytes = 1024

    async def aput(self, kind, payloads):
        raise OSError(28, "No space left on device")


async def test_a_spill_the_spool_cannot_take_is_counted_and_logged_not_lost_silently(caplog):
    log = DecisionLogProcess("sqlite+aiosqlite:///unused.db", maxsize=1, spool=_BrokenSpool())
    assert log.submit(_routed("1.1"))          # held (no child yet)
    assert log.submit(_routed("1.2")) and log.submit(_routed("1.3"))  # past maxsize: to the spool
    await log._spilling                        # the task ends normally, its error handled
    assert log.stats["dropped"] == 2 and log.stats["spooled"] == 0
    assert "could not be spooled" in caplog.text
    assert log.pending == 1                    # the held one is still there
