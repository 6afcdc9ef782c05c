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
import shutil
import time
from collections.abc import Callable
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
_NOT_PAGES = ("/api", "/openapi.json", "/health", "/metrics", "/login", "/logout")


def shipped_rules() -> Path:
    """The repository's rules/ next to the package (a checkout or an editable install)."""
    rules = Path(__file__).resolve().parents[2] / "rules"
    if not (rules / "10-tiers.yaml").exists():
        raise FileNotFoundError(f"the demo needs the shipped rules; not found at {rules} (run it from a checkout)")
    return rules


# the demo is open round the clock: the shipped calendar would send most of a newcomer's
# evening to the after-hours voicemail
DEMO_CALENDAR = """# callrouter demo: open every day, all day (the shipped rules/00-calendar.yaml is not)
timezone: Europe/Moscow
business_hours:
  mon-sun: "00:00-23:59"
"""


def demo_rules(directory: Path) -> Path:
    """The shipped rules, copied, with an always-open calendar."""
    rules = directory / "rules"
    shutil.copytree(shipped_rules(), rules, dirs_exist_ok=True)
    (rules / "00-calendar.yaml").write_text(DEMO_CALENDAR, encoding="utf-8")
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


async def traffic(pbx: DemoPbx, agi_port: int, rate: float, stop: asyncio.Event, phones: list[str]) -> None:
    """A recorded call every 1/rate s until `stop`; callers: the recordings' own, sample
    clients, unknown numbers."""
    rnd = random.Random()
    scenarios = [Scenario.load(name) for name in SCENARIOS]
    weights = list(SCENARIOS.values())
    calls: set[asyncio.Task] = set()
    try:
        while not stop.is_set():
            scenario = rnd.choices(scenarios, weights)[0]
            pick = rnd.random()
            caller = (scenario.caller if pick < 0.3 else rnd.choice(phones).lstrip("+") if pick < 0.85
                      else f"7495{rnd.randrange(10**7):07d}")
            if len(calls) < MAX_CALLS_IN_FLIGHT:
                task = asyncio.create_task(pbx.play(scenario, agi_port, caller))
                calls.add(task)
                task.add_done_callback(calls.discard)
            try:
                await asyncio.wait_for(stop.wait(), 1.0 / rate)
            except TimeoutError:
                pass
    finally:
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


def pages(daemon: Daemon) -> list[str]:
    """The browser pages the API serves (the docs; dashboards where the build has them)."""
    app = daemon.web.app if daemon.web is not None else None
    if app is None:
        return []
    paths = {r.canonical for r in app.router.resources()}
    return sorted(p for p in paths if not p.startswith(_NOT_PAGES) and "{" not in p)


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
    phones = [c.phones[0] for c in seed.clients(n_clients)]
    try:
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(daemon.run(stop), name="daemon")
            started = tg.create_task(daemon.started.wait())
            await asyncio.wait([running, started], return_when=asyncio.FIRST_COMPLETED)
            if not daemon.started.is_set():
                started.cancel()
                return  # the daemon failed to start: the TaskGroup raises its error
            assert daemon.agi is not None and daemon.web is not None and daemon.web.port is not None
            base = f"http://127.0.0.1:{daemon.web.port}"
            say(f"callrouter demo: a simulated PBX calls every {1 / rate:.1f} s; data in {directory}")
            say(f"  API        {base}/api/calls")
            for page in pages(daemon):
                say(f"  page       {base}{page}")
            for who, token in tokens.items():
                say(f"  {who + ' token':<23}{token}")
            if "supervisor" in tokens:
                say(f"  try: curl -s '{base}/api/calls?limit=3' -H 'Authorization: Bearer {tokens['supervisor']}'")
            say("Ctrl-C stops it.")
            tg.create_task(traffic(pbx, daemon.agi.port, rate, stop, phones), name="demo-traffic")
    finally:
        await pbx.close()
