"""`callrouter demo`: the daemon on a fresh SQLite store, fed by the demo PBX.

    seed (managers, clients, API tokens) -> DemoPbx (AMI server) + Daemon (FastAGI, AMI
    client, store, REST API) in one TaskGroup -> traffic: a recorded call every 1/rate s,
    fresh ids, mixed outcomes -> URLs printed -> `stop` (SIGINT/SIGTERM) ends it all

No broker, no PostgreSQL, nothing outside `directory`.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from callrouter.config import AgiConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.daemon import Daemon
from callrouter.store import Store, upgrade
from callrouter.store.users import UserExists

from . import seed
from .pbx import DemoPbx, Scenario

log = logging.getLogger(__name__)

# recorded calls and how often each is played: mostly answered, some missed or abandoned,
# transfers, queues, ring groups
SCENARIOS = {"answered_owner": 4, "caller_hangs_up": 2, "unknown_caller": 3, "anonymous": 1, "blind_transfer": 1,
             "owner_busy_fallback": 2, "owner_noanswer_fallback": 1, "queue_answered": 2, "queue_abandon": 1,
             "caller_abandons": 1, "ring_group": 1}
MAX_CALLS_IN_FLIGHT = 200


def demo_rules(directory: Path) -> Path:
    """The demo's rules (shipped in the package: `callrouter/demo/rules/`, the checkout's
    rules/ with an always-open calendar), copied into `directory` for the daemon to read."""
    rules = directory / "rules"
    rules.mkdir(exist_ok=True)
    for f in (resources.files("callrouter.demo") / "rules").iterdir():
        if f.name.endswith(".yaml"):
            (rules / f.name).write_bytes(f.read_bytes())
    return rules


async def prepare(directory: Path, n_clients: int) -> tuple[str, dict[str, str]]:
    """The store with sample data and demo tokens: (database URL, who -> token)."""
    from callrouter.web.tokens import new_token

    url = f"sqlite+aiosqlite:///{directory / 'demo.db'}"
    await upgrade(url)
    tokens = {}
    async with Store(url) as store:
        await store.upsert_managers(seed.managers())
        await store.upsert_clients(seed.clients(n_clients))
        suffix = time.strftime("%H%M%S")  # a second run in the same --dir gets new tokens
        for who, role, ext in (("supervisor", "supervisor", None), ("manager 101", "manager", "101")):
            token = new_token()
            try:
                await store.add_user(f"demo-{role}-{suffix}", role, ext, token.token_id, token.token_hash)
            except UserExists:
                continue
            tokens[who] = token.token
    return url, tokens


FEATURED = "101"   # the manager whose page the demo prints: about half the owner calls while free


def plan_call(scenario: Scenario, pools: dict[str, list[str]], busy: Counter[str],
              rnd: random.Random) -> tuple[str, dict[str, str]] | None:
    """Who calls in one copy of `scenario` and which manager's phone rings where the
    recording's did (seed.SCENARIO_CALLERS); None when a person it would ring is on a
    call already (a manager takes one call at a time; the desks take any number)."""
    kind = seed.SCENARIO_CALLERS.get(scenario.name, "recorded")
    agents: dict[str, str] = {}
    if kind.startswith("owner:"):
        recorded = kind.removeprefix("owner:")
        others = set(scenario.agents) - {recorded}
        free = [e for e in seed.OWNERS if not busy[e] and e not in others and pools.get(f"owner:{e}")]
        if not free:
            return None
        owner = FEATURED if FEATURED in free and rnd.random() < 0.5 else rnd.choice(free)
        agents[recorded] = owner
        kind = f"owner:{owner}"
    if any(busy[agents.get(a, a)] for a in scenario.agents if a not in seed.DESKS):
        return None
    if kind == "recorded":
        caller = scenario.caller
    elif kind == "unknown":
        caller = f"7495{rnd.randrange(10**7):07d}"
    else:
        caller = rnd.choice(pools.get(kind) or [scenario.caller])
    return caller, agents


async def traffic(pbx: DemoPbx, agi_port: int, rate: float, stop: asyncio.Event,
                  pools: dict[str, list[str]]) -> None:
    """A recorded call every 1/rate s until `stop` (a tick whose picks all ring a busy
    manager starts none)."""
    rnd = random.Random()
    scenarios = [Scenario.load(name) for name in SCENARIOS]
    weights = list(SCENARIOS.values())
    calls: set[asyncio.Task] = set()
    busy: Counter[str] = Counter()

    def start(scenario: Scenario, caller: str, agents: dict[str, str]) -> None:
        people = [agents.get(a, a) for a in scenario.agents if agents.get(a, a) not in seed.DESKS]
        busy.update(people)
        task = asyncio.create_task(pbx.play(scenario, agi_port, caller, agents=agents))
        calls.add(task)
        task.add_done_callback(calls.discard)
        task.add_done_callback(lambda _: busy.subtract(people))

    try:
        while not stop.is_set():
            if len(calls) < MAX_CALLS_IN_FLIGHT:
                for scenario in rnd.choices(scenarios, weights, k=3):
                    plan = plan_call(scenario, pools, busy, rnd)
                    if plan is not None:
                        start(scenario, *plan)
                        break
            try:
                await asyncio.wait_for(stop.wait(), 1.0 / rate)
            except TimeoutError:
                pass
    finally:
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


def banner(base: str, tokens: dict[str, str], rate: float, directory: Path) -> list[str]:
    """What the demo prints: the pages as login links (the token in the URL's fragment,
    which the browser does not send; the page logs in with it and drops it from the
    address bar; the dashboard's `auto=1` refreshes it every 10 s), the tokens
    themselves, a curl to start from."""
    sup, mgr = tokens.get("supervisor"), tokens.get("manager 101")
    lines = [f"callrouter demo: a simulated PBX calls every {1 / rate:.1f} s; data in {directory}",
             f"  supervisor dashboard   {base}/dashboard?auto=1" + (f"#token={sup}" if sup else ""),
             f"  manager 101's page     {base}/manager" + (f"#token={mgr}" if mgr else "") + "   (screen-pops)",
             f"  API docs               {base}/docs",
             f"  API                    {base}/api/calls"]
    lines += [f"  {who + ' token':<23}{token}" for who, token in tokens.items()]
    if sup:
        lines.append(f"  try: curl -s '{base}/api/calls?limit=3' -H 'Authorization: Bearer {sup}'")
    lines.append("Ctrl-C stops it.")
    return lines


async def run_demo(directory: Path, stop: asyncio.Event, *, web_port: int = 8080, agi_port: int = 0,
                   rate: float = 2.0, n_clients: int = 3000, say: Callable[[str], None] = print) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    url, tokens = await prepare(directory, n_clients)
    pbx = DemoPbx()
    await pbx.start()
    settings = Settings(database_url=url, rules_dir=str(demo_rules(directory)), managers=seed.managers(),
                        pbx=(PbxConfig(name="demo", host="127.0.0.1", port=pbx.port, reconnect_max=2.0),),
                        agi=AgiConfig(host="127.0.0.1", port=agi_port), web=WebConfig(host="127.0.0.1", port=web_port),
                        spool=SpoolConfig(path=str(directory / "spool.db")))
    daemon = Daemon(settings, wait_for_directory=True)
    pools = seed.caller_pools(seed.clients(n_clients))
    try:
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(daemon.run(stop), name="daemon")
            started = tg.create_task(daemon.started.wait())
            await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
            if not daemon.started.is_set():
                started.cancel()
                return  # the daemon failed to start: the TaskGroup raises its error
            assert daemon.agi is not None and daemon.web is not None and daemon.web.port is not None
            for line in banner(f"http://127.0.0.1:{daemon.web.port}", tokens, rate, directory):
                say(line)
            tg.create_task(traffic(pbx, daemon.agi.port, rate, stop, pools), name="demo-traffic")
    finally:
        await pbx.close()
