"""`callrouter run` as a user runs it: a real process, a config file, a (fake) PBX over TCP,
SIGTERM while a call is still up — the finished calls are stored complete, the call in
flight is stored incomplete, nothing is dropped."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from callrouter.store import Store, upgrade
from eventually import eventually
from fakeami import FakeAmi, load_recording

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
RULES = Path(__file__).parent.parent / "rules"


def _until_hangup_of_last_call(frames: list[str]) -> list[str]:
    """The burst, cut before its last Hangup: that call is still up when we stop."""
    last = max(i for i, f in enumerate(frames) if f.startswith("Event: Hangup\r\n"))
    return frames[:last]


async def test_sigterm_persists_calls_in_flight_as_incomplete(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade(url)
    frames = _until_hangup_of_last_call(load_recording(RECORDINGS / "burst.ami.jsonl"))
    async with FakeAmi(frames, secret="s3cret") as ami:
        config = tmp_path / "callrouter.toml"
        config.write_text(f'database_url = "{url}"\nrules_dir = "{RULES}"\n[agi]\nport = 0\n[web]\nport = 0\n'
                          f'[[pbx]]\nname = "lab"\nport = {ami.port}\nusername = "callrouter"\n'
                          f'secret = "s3cret"\n')
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callrouter.cli", "--config", str(config), "run",
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            async with Store(url) as store:
                async def finished_calls_stored() -> bool:
                    return await store.count_calls("lab") >= 39
                await eventually(finished_calls_stored)
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 20)
                assert proc.returncode == 0, err.decode()[-2000:]
                assert await store.count_calls("lab") == 40
                rows = [await store.get_call("lab", cid) for cid in await _call_ids(store)]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    complete = [r for r in rows if r.complete]
    incomplete = [r for r in rows if not r.complete]
    assert len(complete) == 39 and all(r.outcome == "answered" for r in complete)
    assert len(incomplete) == 1
    assert "daemon stopped with the call in progress" in incomplete[0].gaps
    assert b"s3cret" not in err


async def _call_ids(store: Store) -> list[str]:
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        return [row[0] for row in await conn.execute(text("select call_id from calls"))]


async def test_bad_config_names_file_key_and_problem_without_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[pbx]]\nname = "lab"\nport = 70000\nsecret = "hunter2"\n[agi]\nport = "x"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter.cli", "--config", str(config), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = err.decode()
    assert proc.returncode != 0
    assert str(config) in text and "pbx.0.port" in text and "agi.port" in text
    assert "hunter2" not in text + out.decode()


async def test_run_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    config = tmp_path / "callrouter.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{tmp_path / "new.db"}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callrouter.cli", "--config", str(config), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode != 0
    assert "callrouter db upgrade" in err.decode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_routing_decision_lands_in_the_call_record(tmp_path: Path) -> None:
    """The whole daemon in one process: Asterisk asks the router (FastAGI, the recorded
    header block), then streams the call over AMI; the stored record carries the router's
    rule, reason, dial and latency and the client it matched."""
    import json

    from agisim import agi_call
    from callrouter.config import load_settings
    from callrouter.daemon import Daemon
    from callrouter.store import Client

    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    async with Store(url) as store:
        await store.upsert_clients([Client(id="c-1001", name="Ivan Petrov", owner_extension="101",
                                           monthly_turnover=120_000, phones=("+79161234567",))])
    agi = json.loads((RECORDINGS / "answered_owner.agi.jsonl").read_text().splitlines()[0])
    agi_port = _free_port()
    async with FakeAmi([]) as ami:
        config = tmp_path / "callrouter.toml"
        config.write_text(f'database_url = "{url}"\nrules_dir = "{RULES}"\n'
                          f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
                          f'[agi]\nhost = "127.0.0.1"\nport = {agi_port}\n[web]\nport = 0\n'
                          f'[[pbx]]\nname = "lab"\nport = {ami.port}\n'
                          f'[[managers]]\nextension = "101"\ndevices = ["Local/101@phones"]\n')
        stop = asyncio.Event()
        daemon = asyncio.create_task(Daemon(load_settings(config)).run(stop))
        try:
            async def logged_in() -> bool:
                return bool(ami.logins)
            await eventually(logged_in)
            answer = await agi_call("127.0.0.1", agi_port, agi["request"].encode())
            assert answer.variables["ROUTE_DIAL"]  # a route, whatever the clock says
            for raw in load_recording(RECORDINGS / "answered_owner.ami.jsonl"):
                ami.push(raw)
            async with Store(url) as store:
                async def stored() -> bool:
                    return await store.count_calls("lab") == 1
                await eventually(stored)
                [call_id] = await _call_ids(store)
                record = await store.get_call("lab", call_id)
        finally:
            stop.set()
            await asyncio.wait_for(daemon, 20)
    assert record.route is not None
    assert record.route.dial == answer.variables["ROUTE_DIAL"]
    assert record.route.reason == answer.variables["ROUTE_REASON"]
    assert record.route.rule and record.route.latency_ms is not None and record.route.latency_ms > 0
    assert record.client_id == "c-1001"
    assert (record.outcome, record.answered_by, record.complete) == ("answered", "101", True)


async def _lab_store(tmp_path: Path) -> str:
    """A migrated SQLite store in tmp_path, and a copy of the shipped rules beside it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    shutil.copytree(RULES, tmp_path / "rules", ignore=shutil.ignore_patterns("*.md"))
    return url


def _lab_config(tmp_path: Path, url: str, ami_port: int, *, web: str) -> Path:
    """A config for one PBX `lab` on ami_port, FastAGI and the spool local, `[web]` as given."""
    config = tmp_path / "callrouter.toml"
    config.write_text(f'database_url = "{url}"\nrules_dir = "{tmp_path / "rules"}"\n[agi]\nhost = "127.0.0.1"\n'
                      f'port = 0\n[web]\n{web}\n[spool]\npath = "{tmp_path / "spool.db"}"\n'
                      f'[[pbx]]\nname = "lab"\nport = {ami_port}\n')
    return config


async def test_the_daemon_shows_live_calls_counts_reloads_and_stores_the_open_call(tmp_path: Path) -> None:
    """What a web layer will read from the Daemon while it runs: the call in progress in
    its snapshot, the walk's counters; SIGHUP's reload picks up new rules; on stop the
    open call is written incomplete."""
    from callrouter.config import load_settings
    from callrouter.daemon import Daemon

    url = await _lab_store(tmp_path)
    frames = load_recording(RECORDINGS / "answered_owner.ami.jsonl")
    first_hangup = next(i for i, f in enumerate(frames) if f.startswith("Event: Hangup\r\n"))
    async with FakeAmi(frames[:first_hangup]) as ami:
        config = _lab_config(tmp_path, url, ami.port, web="port = 0")
        daemon = Daemon(load_settings(config))
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        try:
            async def call_is_live() -> bool:
                return daemon.started.is_set() and any(p.live_calls for p in daemon.snapshot().pbx)
            await eventually(call_is_live)
            [lab] = daemon.snapshot().pbx
            assert lab.name == "lab" and lab.connected
            [live] = lab.live_calls
            assert live.pbx == "lab" and live.caller_raw.endswith("9161234567")
            assert daemon.counters()["calllog.lab.events"] > 0
            assert daemon.counters()["calllog.lab.in_flight"] == 1

            (tmp_path / "rules" / "99-extra.yaml").write_text("rules:\n  - {name: extra, dial: Local/x@queues}\n")
            daemon.reload()

            async def reloaded() -> bool:
                return daemon.rules.version == 2
            await eventually(reloaded)
            assert daemon.rules.current.rules[-1].rule.name == "extra"
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
    async with Store(url) as store:
        [call_id] = await _call_ids(store)
        record = await store.get_call("lab", call_id)
    assert record.complete is False and record.gaps == ("daemon stopped with the call in progress",)
    assert daemon.counters()["reporter.call record.saved"] == 1


async def test_a_part_that_never_ends_does_not_hold_the_stop(tmp_path: Path, caplog) -> None:
    """A consumer stuck past the stop budget (here a reporter whose task ignores close, as
    a library call without a timeout would) is cancelled: the daemon still stops within
    10 s, the call records are stored, and the log names what was cut."""
    import logging

    from callrouter.calllog.reporters import QueuedReporter
    from callrouter.config import load_settings
    from callrouter.daemon import Daemon

    class StuckReporter(QueuedReporter):
        name = "stuck"

        async def run(self) -> None:
            await asyncio.Event().wait()

        async def close(self, timeout: float | None = 10.0) -> None:
            return None

    class DaemonWithAStuckPart(Daemon):
        def build_reporters(self, store):
            return [*super().build_reporters(store), StuckReporter()]

    url = await _lab_store(tmp_path)
    frames = load_recording(RECORDINGS / "answered_owner.ami.jsonl")
    async with FakeAmi(frames) as ami:
        config = _lab_config(tmp_path, url, ami.port, web="enabled = false")
        daemon = DaemonWithAStuckPart(load_settings(config))
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))

        async def call_is_stored() -> bool:
            return daemon.started.is_set() and daemon.counters().get("reporter.call record.saved", 0) == 1
        await eventually(call_is_stored)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with caplog.at_level(logging.WARNING, logger="callrouter.daemon"):
            stop.set()
            done, _ = await asyncio.wait([running], timeout=12)
        if not done:
            running.cancel()
        assert done, "the daemon was still stopping 12 s after stop"
        running.result()
        assert loop.time() - began < 10
    assert any("reporter-stuck did not end within the stop budget" in r.getMessage() for r in caplog.records)
    async with Store(url) as store:
        assert len(await _call_ids(store)) == 1
