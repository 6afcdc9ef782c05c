"""Faults, as a PBX drives the daemon through them, against the real PostgreSQL behind a
proxy the test controls (tests/pgproxy.py): a 60 s outage under traffic, a SIGKILL and a
restart, a NUL in a caller name and in a caller ID. Traffic is the recorded
`unknown_caller` call, each copy with fresh ids (tests/fakeami.py), and its FastAGI route
request (tests/agisim.py), so every call makes one record, one decision and one lead.

PostgreSQL only (these faults are the server's and the network's); skipped without
CALLROUTER_TEST_PG_URL."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from agisim import agi_call, route_request
from callrouter.config import AgiConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.daemon import Daemon
from callrouter.store import Store, upgrade
from callrouter.store.schema import Call, DeadLetter, Lead, RouteDecisionRow
from callrouter.store.spool import decode_decision, decode_record
from callrouter.text import NUL_SIGN
from conftest import _pg_execute, run_in_thread
from eventually import eventually
from fakeami import FakeAmi, load_recording
from pgproxy import PgProxy

HERE = Path(__file__).parent
RULES = HERE.parent / "rules"
CALL = load_recording(HERE / "fixtures" / "asterisk" / "unknown_caller.ami.jsonl")
HOST = "127.0.0.1"
OUTAGE = 60.0  # s: half refused (after a cut), half black-holed
PACE = 0.25    # s between calls
_ID = re.compile(r"\b1795370451\.(\d+)\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def fresh_call(n: int, caller_name: str | None = None) -> tuple[list[str], str]:
    """The recorded call with its own uniqueids, linkedid and bridge ids: (frames, linkedid)."""
    prefix = str(1_800_000_000 + n)
    bridges: dict[str, str] = {}
    frames = []
    for raw in CALL:
        raw = _ID.sub(lambda m: f"{prefix}.{m.group(1)}", raw)
        raw = _UUID.sub(lambda m: bridges.setdefault(m.group(0), str(uuid.uuid4())), raw)
        if caller_name is not None:
            raw = raw.replace("CallerIDName: 74951112233\r\n", f"CallerIDName: {caller_name}\r\n")
        frames.append(raw)
    return frames, f"{prefix}.528"


@dataclass
class Traffic:
    """Calls as a PBX makes them: the route request, then the call's AMI events."""
    ami: FakeAmi
    agi_port: int
    linkedids: list[str] = field(default_factory=list)
    answers: list[dict[str, str]] = field(default_factory=list)
    callers: list[str] = field(default_factory=list)
    n: int = 0

    async def call(self, *, caller: str | None = None, caller_name: str | None = None) -> None:
        self.n += 1
        frames, linkedid = fresh_call(self.n, caller_name)
        caller = caller or f"8495{self.n:07d}"
        answer = await agi_call(HOST, self.agi_port, route_request(caller, linkedid=linkedid), timeout=10)
        self.answers.append(answer.variables)
        self.callers.append(caller)
        self.linkedids.append(linkedid)
        for raw in frames:
            self.ami.push(raw)

    async def run(self, until: asyncio.Event) -> None:
        while not until.is_set():
            await self.call()
            await asyncio.sleep(PACE)


@pytest.fixture
def pg_url(pg_database: str) -> str:
    run_in_thread(lambda: _pg_execute(pg_database, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    run_in_thread(lambda: upgrade(pg_database))
    return pg_database


def through(url: str, proxy: PgProxy) -> str:
    return make_url(url).set(host=HOST, port=proxy.port).render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Stored:
    call_ids: list[str]
    decision_uniqueids: list[str]
    lead_call_ids: list[str]


async def stored(url: str) -> Stored:
    async with Store(url) as store, store.engine.connect() as conn:
        return Stored(list((await conn.execute(select(Call.call_id))).scalars()),
                      list((await conn.execute(select(RouteDecisionRow.uniqueid))).scalars()),
                      list((await conn.execute(select(Lead.call_id))).scalars()))


def assert_each_once(got: list[str], expected: list[str], what: str) -> None:
    assert len(got) == len(set(got)), f"{what}: duplicates"
    missing = set(expected) - set(got)
    assert not missing, f"{what}: {len(missing)} of {len(expected)} lost, e.g. {sorted(missing)[:3]}"


def assert_answered_in_time(answers: list[dict[str, str]]) -> None:
    # a route computed by the rules; `default:timeout` would mean the deadline was missed
    late = [a for a in answers if not a.get("ROUTE_DIAL") or a.get("ROUTE_REASON", "").startswith("default:")]
    assert not late, f"{len(late)} of {len(answers)} calls got the default route, e.g. {late[:2]}"


# ------------------------------------------------------------------ a 60 s outage under traffic

async def test_a_60_s_outage_under_traffic_loses_nothing_and_duplicates_nothing(pg_url, tmp_path):
    async with PgProxy(HOST, make_url(pg_url).port or 5432) as proxy, FakeAmi([]) as ami:
        settings = Settings(database_url=through(pg_url, proxy), rules_dir=str(RULES),
                            agi=AgiConfig(host=HOST, port=0), web=WebConfig(enabled=False),
                            spool=SpoolConfig(path=str(tmp_path / "spool.db")),
                            pbx=(PbxConfig(name="lab", host=HOST, port=ami.port),))
        daemon = Daemon(settings, wait_for_directory=True)
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.started.wait(), 30)

        async def logged_in() -> bool:
            return bool(ami.logins)
        await eventually(logged_in, 10, "AMI login")
        traffic = Traffic(ami, daemon.agi.port)
        enough = asyncio.Event()
        calling = asyncio.create_task(traffic.run(enough))
        await asyncio.sleep(3)
        proxy.cut()                  # the server restarts ...
        proxy.refuse()               # ... and stays down
        await asyncio.sleep(OUTAGE / 2)
        await proxy.restore()
        proxy.blackhole()            # then the network to it dies
        await asyncio.sleep(OUTAGE / 2)
        await proxy.restore()
        await asyncio.sleep(3)
        enough.set()
        await calling

        async def all_stored() -> bool:
            s = await stored(pg_url)
            return (len(s.call_ids) >= len(traffic.linkedids) and daemon.spool.depth() == 0
                    and len(s.decision_uniqueids) >= len(traffic.linkedids))
        await eventually(all_stored, 120, "everything stored after the outage")
        counters = daemon.counters()
        stop.set()
        await asyncio.wait_for(running, 10)

    s = await stored(pg_url)
    print(f"\n{len(traffic.linkedids)} calls over a {OUTAGE:.0f} s outage: {len(s.call_ids)} records, "
          f"{len(s.decision_uniqueids)} decisions, {len(s.lead_call_ids)} leads stored; " +
          ", ".join(f"{k}={v}" for k, v in sorted(counters.items()) if k.startswith(("spool.", "reporter.", "decision_log."))))
    assert_each_once(s.call_ids, traffic.linkedids, "call records")
    assert_each_once(s.decision_uniqueids, traffic.linkedids, "routing decisions")  # the AGI channel is the call's first
    assert_each_once(s.lead_call_ids, traffic.linkedids, "leads")                    # every caller new: a lead each
    assert_answered_in_time(traffic.answers)
    # the outage went through the spool, for both kinds, and nothing was refused or dead
    assert counters["reporter.call record.spooled"] > 0 and counters["decision_log.spooled"] > 0
    assert counters.get("spool.refused", 0) == 0 and counters.get("spool.record-dead", 0) == 0
    assert counters["spool.record-drained"] > 0 and counters["spool.decision-drained"] > 0


# ------------------------------------------------------------------ SIGKILL and a restart

def spooled_keys(path: Path) -> tuple[set[str], set[str]]:
    """(call_ids, decision uniqueids) the spool file holds, as committed now."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind, payload FROM items").fetchall()
    finally:
        db.close()
    return ({decode_record(p).call_id for k, p in rows if k == "record"},
            {decode_decision(p).uniqueid for k, p in rows if k == "decision"})


async def start_daemon(config: Path, cwd: Path, log: Path) -> asyncio.subprocess.Process:
    """`callrouter run`, its log to a file (a pipe nobody reads would block it when full)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter.cli", "--config", str(config), "run",
            stderr=out, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def write_config(path: Path, url: str, agi_port: int, ami_port: int, spool: Path) -> None:
    path.write_text(f'database_url = "{url}"\nrules_dir = "{RULES}"\n[spool]\npath = "{spool}"\n'
                    f'[agi]\nhost = "{HOST}"\nport = {agi_port}\n[web]\nenabled = false\n'
                    f'[[pbx]]\nname = "lab"\nhost = "{HOST}"\nport = {ami_port}\n')


async def test_a_sigkill_under_traffic_loses_nothing_acknowledged_and_a_restart_stores_it(pg_url, tmp_path):
    """`callrouter run` under traffic, the database down, killed with SIGKILL: whatever
    was stored or acknowledged as spooled before the kill is in the store after a
    restart, once. Then, the database black-holed, SIGTERM stops it within 10 s and the
    log says how many items wait in the spool."""
    spool = tmp_path / "spool.db"
    agi_port = free_port()
    async with PgProxy(HOST, make_url(pg_url).port or 5432) as proxy, FakeAmi([]) as ami:
        config = tmp_path / "callrouter.toml"
        write_config(config, through(pg_url, proxy), agi_port, ami.port, spool)
        first = await start_daemon(config, tmp_path, tmp_path / "first.log")
        try:
            traffic = Traffic(ami, agi_port)

            async def listening() -> bool:
                return bool(ami.logins) and await _accepts(agi_port)
            await eventually(listening, 30, "the daemon up")
            for _ in range(10):
                await traffic.call()
            proxy.cut()
            proxy.refuse()                       # the database goes down; traffic goes on

            async def both_spooled() -> bool:
                records, decisions = spooled_keys(spool) if spool.exists() else (set(), set())
                return len(records) >= 5 and len(decisions) >= 5
            calling = asyncio.create_task(_keep_calling(traffic))
            await eventually(both_spooled, 60, "records and decisions in the spool")
            in_spool = spooled_keys(spool)
            first.kill()                         # SIGKILL, mid-traffic
            await first.wait()
            calling.cancel()
            await asyncio.gather(calling, return_exceptions=True)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        await proxy.restore()
        before = await stored(pg_url)

        second = await start_daemon(config, tmp_path, tmp_path / "second.log")  # the restart drains the spool
        try:
            async def drained() -> bool:
                return spool.exists() and sum(len(k) for k in spooled_keys(spool)) == 0
            await eventually(drained, 60, "the spool drained after the restart")
            after = await stored(pg_url)
            await eventually(listening, 30, "the second daemon up")
            for _ in range(4):
                await traffic.call()
            proxy.blackhole()                        # now the network to the database dies
            for _ in range(8):
                await traffic.call()
            await asyncio.sleep(3)                   # records and decisions wait in memory/spool
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 10)  # bounded whatever the database does
        finally:
            if second.returncode is None:
                second.kill()
                await second.wait()
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, log[-3000:]
    assert_each_once(after.call_ids, sorted(in_spool[0] | set(before.call_ids)), "call records")
    assert_each_once(after.decision_uniqueids, sorted(in_spool[1] | set(before.decision_uniqueids)),
                     "routing decisions")
    assert in_spool[0] - set(before.call_ids) and in_spool[1] - set(before.decision_uniqueids)  # the spool mattered
    held = re.search(r"spool \S+ holds (\d+) item\(s\)", log)
    records, decisions = spooled_keys(spool)
    assert held and int(held.group(1)) == len(records) + len(decisions) > 0


async def _accepts(port: int) -> bool:
    try:
        _, w = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    w.close()
    return True


async def _keep_calling(traffic: Traffic) -> None:
    while True:
        await traffic.call()
        await asyncio.sleep(PACE)


# ------------------------------------------------------------------ poison values

async def test_a_nul_in_a_caller_name_and_in_a_caller_id_blocks_nothing(pg_url, tmp_path):
    """On PostgreSQL, which refuses a NUL in text: the call whose caller name has a NUL and
    the route request whose agi_callerid has one are stored (the NUL made visible, ␀),
    every other row too, and SIGTERM stops the daemon within 10 s."""
    agi_port = free_port()
    async with FakeAmi([]) as ami:
        config = tmp_path / "callrouter.toml"
        write_config(config, pg_url, agi_port, ami.port, tmp_path / "spool.db")
        proc = await start_daemon(config, tmp_path, tmp_path / "daemon.log")
        try:
            traffic = Traffic(ami, agi_port)

            async def listening() -> bool:
                return bool(ami.logins) and await _accepts(agi_port)
            await eventually(listening, 30, "the daemon up")
            for n in range(12):
                if n == 4:
                    await traffic.call(caller_name="Ivan\x00Petrov")
                elif n == 7:
                    await traffic.call(caller="8495\x001234567")
                else:
                    await traffic.call()

            async def all_in() -> bool:
                s = await stored(pg_url)
                return len(s.call_ids) == 12 and len(s.decision_uniqueids) == 12
            await eventually(all_in, 30, "every record and decision stored")
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    s = await stored(pg_url)
    assert_each_once(s.call_ids, traffic.linkedids, "call records")
    assert_each_once(s.decision_uniqueids, traffic.linkedids, "routing decisions")
    async with Store(pg_url) as store:
        named = await store.get_call("lab", traffic.linkedids[4])
        async with store.engine.connect() as conn:
            raw = await conn.scalar(select(RouteDecisionRow.caller_raw)
                                    .where(RouteDecisionRow.uniqueid == traffic.linkedids[7]))
            n_dead = await conn.scalar(select(func.count()).select_from(DeadLetter))
    assert named is not None and named.caller.name == f"Ivan{NUL_SIGN}Petrov"
    assert raw == f"8495{NUL_SIGN}1234567"
    assert n_dead == 0  # made storable at the edge: nothing needed the dead-letter path
