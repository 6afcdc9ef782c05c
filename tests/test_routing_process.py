"""The router in its own process (`[agi] routing = "process"`, the default): the daemon's
presence reaches it, clients changed in the store reach it, its answers come back to the
daemon's decision log and call records, it is started again when it dies (the port stays
open), and it ends with the daemon."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from agisim import agi_call, route_request
from callrouter.ami.capture import read_events
from callrouter.ami.events import StreamGap
from callrouter.routing.presence import Presence, PresenceCopy
from callrouter.store import Client, Store, upgrade
from eventually import eventually
from fakeami import FakeAmi, load_recording

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
IVAN = "+79161234567"        # c-1001, owner 101, wholesale turnover (answered_owner's caller)
NEW_CALLER = "+79165550123"


def _statuses(p: Presence | PresenceCopy, extensions: set[str]) -> dict:
    return {e: p.get(e) for e in sorted(extensions)}


def test_a_presence_copy_answers_what_the_presence_says_after_every_event() -> None:
    presence, copy = Presence(), PresenceCopy()
    woken: list[int] = []
    presence.on_change = lambda: woken.append(1)
    extensions = {"101", "102", "103", "104", "999"}
    busy_seen = False
    for name in ("answered_owner", "owner_offline_fallback", "burst", "blind_transfer", "queue_answered"):
        for i, event in enumerate(read_events(RECORDINGS / f"{name}.ami.jsonl")):
            presence.apply(event, source="lab")
            if i == 7:
                presence.set_dnd("102", True)
            if i == 11:
                presence.load_dnd({"103"})
            copy.update(presence.take_changes())
            extensions |= set(presence.snapshot())
            assert _statuses(copy, extensions) == _statuses(presence, extensions), (name, i)
            busy_seen = busy_seen or any(st.state == "busy" for st in presence.snapshot().values())
    assert busy_seen
    presence.apply(StreamGap(time=None, reason="test"), source="lab")  # a gap forgets what events said: the copy too
    copy.update(presence.take_changes())
    assert _statuses(copy, extensions) == _statuses(presence, extensions)
    assert woken  # the follower is woken (once per batch of changes)
    assert presence.take_changes() == []


def test_a_presence_nobody_follows_notes_no_changes() -> None:
    presence = Presence()
    for event in read_events(RECORDINGS / "answered_owner.ami.jsonl"):
        presence.apply(event)
    presence.set_dnd("101", True)
    assert presence.take_changes() == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_routing_process_follows_the_daemon_and_survives_its_own_death(tmp_path: Path) -> None:
    from callrouter.config import load_settings
    from callrouter.daemon import Daemon
    from callrouter.demo.run import demo_rules
    from callrouter.routing.process import RoutingProcess

    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    async with Store(url) as store:
        await store.upsert_clients([Client(id="c-1001", name="Ivan Petrov", owner_extension="101",
                                           monthly_turnover=120_000, phones=(IVAN,))])
    rules = demo_rules(tmp_path)  # open round the clock: the owner rule applies whenever this runs
    frames = load_recording(RECORDINGS / "answered_owner.ami.jsonl")
    first_hangup = next(i for i, f in enumerate(frames) if f.startswith("Event: Hangup\r\n"))
    async with FakeAmi([]) as ami:
        config = tmp_path / "callrouter.toml"
        config.write_text(f'database_url = "{url}"\nrules_dir = "{rules}"\n'
                          f'[agi]\nhost = "127.0.0.1"\nport = 0\n[web]\nenabled = false\n'
                          f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
                          f'[[pbx]]\nname = "lab"\nport = {ami.port}\n'
                          f'[[managers]]\nextension = "101"\ndevices = ["Local/101@phones"]\n'
                          f'[[managers]]\nextension = "102"\n')
        daemon = Daemon(load_settings(config), wait_for_directory=True)
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.started.wait(), 60)
            routing = daemon.agi
            assert isinstance(routing, RoutingProcess) and daemon.router is None
            first_pid = routing.pid
            assert first_pid is not None and first_pid != os.getpid()
            port = routing.port

            async def call(caller: str, linkedid: str) -> dict[str, str]:
                answer = await agi_call("127.0.0.1", port, route_request(caller, linkedid=linkedid))
                return answer.variables

            assert (await call(IVAN, "1795370400.1"))["ROUTE_REASON"] == "owner"

            # 101 picks up a call (the recording up to its first Hangup): the router's
            # presence copy hears it, and Ivan's next call goes to his tier
            for raw in frames[:first_hangup]:
                ami.push(raw)

            async def owner_busy() -> bool:
                return (await call(IVAN, "1795370400.2"))["ROUTE_REASON"] != "owner"
            await eventually(owner_busy)
            assert (await call(IVAN, "1795370400.3"))["ROUTE_REASON"] == "owner-unavailable→tier:wholesale"

            # a client added in the store reaches the router's own directory
            assert (await call(NEW_CALLER, "1795370400.4"))["ROUTE_REASON"].startswith("unknown")
            async with Store(url) as store:
                await store.upsert_clients([Client(id="c-2002", name="Olga", owner_extension="102",
                                                   monthly_turnover=1_000, phones=(NEW_CALLER,))])
            await daemon.clients_changed(["c-2002"])

            async def new_client_known() -> bool:
                return (await call(NEW_CALLER, "1795370400.5")).get("CLIENT_ID") == "c-2002"
            await eventually(new_client_known, 5)

            # the answers came back to the daemon: decision log and the latency figures
            async def counted() -> bool:
                c = daemon.counters()
                return c.get("agi.answered", 0) >= 5 and c.get("decision_log.decisions", 0) >= 5
            await eventually(counted, 10)

            # the child dies: the daemon starts another; the port never closed
            os.kill(first_pid, signal.SIGKILL)

            async def restarted() -> bool:
                return routing.pid not in (None, first_pid) and routing.ready
            await eventually(restarted, 20)
            after = await call(IVAN, "1795370400.6")
            assert after["ROUTE_REASON"] == "owner-unavailable→tier:wholesale"  # the snapshot came again
            assert daemon.counters()["agi.restarts"] == 1
            second_pid = routing.pid
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
    assert second_pid is not None and not _alive(second_pid)
    from sqlalchemy import text

    async with Store(url) as store, store.engine.connect() as conn:
        assert (await conn.execute(text("select count(*) from route_decisions"))).scalar() >= 6


async def test_a_routing_process_that_cannot_start_fails_the_start_and_frees_the_port(tmp_path: Path) -> None:
    """The child exits before it accepts calls (here: no rules where it looks): `start`
    says so (the daemon turns it into a one-line start-up error) and closes the port."""
    import socket

    import pytest

    from callrouter.config import AgiConfig
    from callrouter.routing.process import RoutingProcess, RoutingProcessError

    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    routing = RoutingProcess(
        {"database_url": url, "rules_dir": str(tmp_path / "no-rules-here"), "region": "RU",
         "agi": AgiConfig().model_dump(mode="json"), "devices": {}, "pbx": "lab", "pbx_names": ["lab"],
         "pbx_by_peer": {}, "wait_for_directory": False, "directory_refresh": 300.0, "log_level": "INFO"},
        host="127.0.0.1", port=0)
    with pytest.raises(RoutingProcessError, match="exited"):
        await routing.start(timeout=30)
    with socket.socket() as again:  # the port is free again
        again.bind(("127.0.0.1", routing.port))
