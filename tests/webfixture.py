"""A running Daemon with its REST API on 127.0.0.1 (any free port), a fake PBX on AMI,
users of every role with real tokens, two managers' clients and calls, and one routing
decision: what the API tests and the schemathesis run talk to over real HTTP."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from tempfile import TemporaryDirectory
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from callrouter.config import AgiConfig, ManagerConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.daemon import Daemon
from callrouter.records import CallRecord, Leg, Party, Transfer
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.store import Client, Store, upgrade
from callrouter.web.tokens import new_token
from fakeami import FakeAmi

RULES = Path(__file__).parent.parent / "rules"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HOST = "127.0.0.1"
USERS = {"ann": ("manager", "101"), "bob": ("manager", "102"), "sue": ("supervisor", None),
         "adam": ("admin", None), "rex": ("supervisor", None),
         "nix": ("manager", None)}  # a manager row made around the CLI, without an extension


def call(call_id: str, agent: str, client_id: str, minutes: int, *, transfers=()) -> CallRecord:
    start = MONDAY_10 + timedelta(minutes=minutes)
    return CallRecord(pbx="lab", call_id=call_id, direction="in", caller=Party(number="+79161234567",
                      raw="89161234567"), callee=Party(raw="5550100"), client_id=client_id, started_at=start,
                      answered_at=start + timedelta(seconds=4), ended_at=start + timedelta(seconds=64),
                      ring_seconds=4.0, talk_seconds=60.0, duration_seconds=64.0, outcome="answered",
                      hangup_by="caller", answered_by=agent, final_agent=agent,
                      legs=(Leg(agent=agent, device=f"PJSIP/{agent}", ring_seconds=4.0, result="answered"),),
                      transfers=tuple(transfers))


@dataclass
class Api:
    url: str
    daemon: Daemon
    agi_port: int
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


async def seed(store: Store) -> dict[str, str]:
    tokens = {}
    for name, (role, ext) in USERS.items():
        t = new_token()
        await store.add_user(name, role, ext, t.token_id, t.token_hash)
        tokens[name] = t.token
    await store.revoke_user("rex")
    await store.upsert_clients([
        Client(id="c-ann", name="Анна Клиентова", owner_extension="101", phones=("+79161234567",)),
        Client(id="c-bob", name="Boris Buyer", owner_extension="102", monthly_turnover=2e6,
               phones=("+79165550000",))])
    await store.save_calls([
        call("1700000001.1", "101", "c-ann", 0, transfers=(Transfer(kind="blind", **{"from": "101"}, to="102"),)),
        call("1700000002.1", "102", "c-bob", 5)])
    decision = RouteDecision(rule="owner", reason="owner", dial="PJSIP/101", timeout=20, client_id="c-ann",
                             client_name="Анна Клиентова", caller="+79161234567", owner="101",
                             trace=("owner: client c-ann owned by 101, available",))
    await store.save_route_decision(RoutedCall("lab", "1700000001.1", "1700000001.1", "PJSIP/trunk-01",
                                               "89161234567", decision, MONDAY_10, 1.5, 2.0, "answered"))
    return tokens


@asynccontextmanager
async def running_api(store_url: str, **settings_extra) -> AsyncIterator[Api]:
    await upgrade(store_url)
    async with Store(store_url) as store:
        tokens = await seed(store)
    with TemporaryDirectory() as spool_dir:
        async with FakeAmi([]) as ami:
            settings = Settings(database_url=store_url, rules_dir=str(RULES),
                                agi=AgiConfig(host=HOST, port=0, decision_log="inline"), web=WebConfig(host=HOST, port=0),
                                spool=SpoolConfig(path=f"{spool_dir}/spool.db"),
                                pbx=(PbxConfig(name="lab", host=HOST, port=ami.port),),
                                managers=(ManagerConfig(extension="101", devices=("PJSIP/101",)),
                                          ManagerConfig(extension="102", devices=("PJSIP/102",))),
                                **settings_extra)
            daemon = Daemon(settings, clock=lambda: MONDAY_10, wait_for_directory=True)
            stop = asyncio.Event()
            running = asyncio.create_task(daemon.run(stop))
            try:
                await asyncio.wait_for(_started(daemon, running), 20)
                assert daemon.web is not None and daemon.agi is not None
                loop = asyncio.get_running_loop()
                end = loop.time() + 10
                while not all(p.connected for p in daemon.snapshot().pbx) and loop.time() < end:
                    await asyncio.sleep(0.02)
                yield Api(f"http://{HOST}:{daemon.web.port}", daemon, daemon.agi.port, tokens)
            finally:
                stop.set()
                await asyncio.wait_for(running, 20)


async def _started(daemon: Daemon, running: asyncio.Task) -> None:
    waiter = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait([waiter, running], return_when=asyncio.FIRST_COMPLETED)
    if running in done:
        waiter.cancel()
        running.result()  # raises what stopped the daemon
        raise RuntimeError("the daemon stopped before it started")
