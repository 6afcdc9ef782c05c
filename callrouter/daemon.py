"""The running daemon: one object that owns every part and every task.

    daemon = Daemon(settings)
    await daemon.run(stop)          # until `stop` is set (SIGTERM/SIGINT in `run_daemon`)

`run` opens the store, builds the parts — presence, rules, phone directory, the routing
process (`callrouter.routing.process`: FastAGI server and router in a child process; with
`agi.routing = "inline"` or a fixed clock, a router and FastAGI server here), decision log,
route log, reporters (from config), and per PBX an AMI source with its call log — and runs
every long-lived task in one TaskGroup. When `stop`
is set it stops in one place, in this order: the FastAGI server stops accepting (calls
in flight get a grace period), the AMI sources close (events already read are still
walked; calls in flight become incomplete records), the reporters write what they hold,
the decision log flushes, the periodic refreshes and the spool drain end. The whole
stop takes at most STOP_BUDGET s whatever the database does (a hung connection, refusals):
what could not be stored by then is in the spool (`[spool] path`), and the log says how
many items it holds. A PBX source that gives up stops the daemon the same way.

The spool (callrouter.store.spool) takes the call records and routing decisions the
database does not take; its drain (a task in the TaskGroup) replays them, oldest first,
when the database is back.

Clients changed by another process (`callrouter import`, another daemon) reach the phone
directory through the client change feed (`store/changes.py`), within a second.

Screen-pop (`callrouter.screenpop`): the pop builder and the callback keeper are reporters
like the record writer; the builder feeds `pops` (a hub) that the web app's WebSockets and,
with `[mqtt]`, the MQTT publisher (a task here, stopped last: it says "offline") follow.

The REST API (`callrouter.web`, `[web]` in the config) is one of the parts: built
here, bound in `run`, closed first in `_stop`. What it needs is here: `snapshot()` (live calls, presence, AMI links),
`counters()`, `reload()` (SIGHUP: rules and DND), `set_dnd()`, `clients_changed()`.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callrouter.agi.server import FastAgiServer
from callrouter.ami.client import AmiSource
from callrouter.calllog.reporters import QueuedReporter
from callrouter.calllog.routes import RouteLog
from callrouter.calllog.storing import RecordWriter
from callrouter.calllog.walk import CallLog, follow
from callrouter.config import PbxConfig, Settings
from callrouter.devices import DeviceMap
from callrouter.routing.lookup import PhoneDirectory
from callrouter.routing.presence import Presence
from callrouter.routing.process import RoutingProcess, RoutingProcessError
from callrouter.routing.router import Router
from callrouter.routing.rules import RulesError, RuleSet
from callrouter.routing.types import AgentStatus
from callrouter.screenpop.builder import CardSource, PopBuilder
from callrouter.screenpop.hub import PopHub
from callrouter.screenpop.keeper import CallbackKeeper
from callrouter.store import Store
from callrouter.store.changes import ClientChangeFeed
from callrouter.store.spool import Spool, SpoolDrain
from callrouter.tracker import LiveCall, Tracker
from callrouter.web import WebServer

log = logging.getLogger(__name__)

STOP_GRACE = 2.0         # s: FastAGI calls in flight finish within this after stop
DRAIN_TIMEOUT = 10.0     # s: reporters and the decision log write what they hold within this
# s: the whole stop, SIGTERM to the store's close; with the store's own bounded close
# (store.CLOSE_TIMEOUT, 2 s) a daemon stops within ~8 s whatever the database does
STOP_BUDGET = 6.0
DIRECTORY_REFRESH = 300.0
DND_REFRESH = 15.0
STOPPED_MID_CALL = "daemon stopped with the call in progress"
FREEZE_AFTER_LOAD = True  # gc.freeze() after the directory's first load (see _load_directory)


@dataclass(frozen=True, slots=True)
class PbxSnapshot:
    name: str
    connected: bool
    live_calls: tuple[LiveCall, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    pbx: tuple[PbxSnapshot, ...]
    presence: dict[str, AgentStatus]


class StartupError(Exception):
    """The daemon cannot start: one line naming what (the database, a port, the rules) and
    why; never a secret (a database URL is shown without its password)."""


def _why(e: BaseException) -> str:
    """The reason of a low-level error in a few words (asyncpg/SQLAlchemy/OSError)."""
    orig = getattr(e, "orig", None) or e.__cause__ or e  # SQLAlchemy wraps the driver's error
    if isinstance(orig, TimeoutError) or isinstance(e, TimeoutError):
        return "no answer in time"
    if isinstance(orig, OSError) and (orig.errno or orig.strerror):
        return (os.strerror(orig.errno) if orig.errno else str(orig.strerror)).lower()
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:200]


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: do not show it
        return "(database_url)"


async def _aiosqlite_threads_done(timeout: float = 1.0) -> None:
    """A SQLite file that failed to open leaves aiosqlite's worker thread answering a last
    future; if the loop closes first, the thread dies with a traceback on stderr."""
    for t in threading.enumerate():
        if "_connection_worker_thread" in t.name:
            await asyncio.to_thread(t.join, timeout)


class PbxLink:
    """One PBX: its AMI source and its call log."""

    def __init__(self, cfg: PbxConfig, calllog: CallLog):
        self.cfg = cfg
        self.calllog = calllog
        self.source = AmiSource(cfg)


def pbx_by_address(pbxs: tuple[PbxConfig, ...]) -> dict[str, str]:
    """FastAGI peer address -> PBX name, from each PBX's `agi_sources` (else its `host`).
    An address two PBXs share names neither: their requests must say `pbx=` in the URL."""
    owners: dict[str, set[str]] = {}
    for p in pbxs:
        for addr in p.agi_sources or (p.host,):
            owners.setdefault(addr, set()).add(p.name)
    shared = {a: sorted(n) for a, n in owners.items() if len(n) > 1}
    if shared:
        log.info("FastAGI: %s shared by several PBXs; their AGI URLs must name the PBX (route?pbx=NAME)",
                 "; ".join(f"{a} ({', '.join(n)})" for a, n in shared.items()))
    return {a: next(iter(n)) for a, n in owners.items() if len(n) == 1}


class Daemon:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] | None = None,
                 wait_for_directory: bool = False):
        self.settings = settings
        self._clock = clock
        self._wait_for_directory = wait_for_directory
        self.started = asyncio.Event()   # every part built, FastAGI listening
        self.store: Any = None
        self.devices: DeviceMap | None = None
        self.presence: Presence | None = None
        self.rules: RuleSet | None = None
        self.directory: PhoneDirectory | None = None
        self.router: Router | None = None   # with routing inline only (else it is in the child)
        self.agi: FastAgiServer | RoutingProcess | None = None
        self.decision_log: Any = None
        self.routes: RouteLog | None = None
        self.reporters: list[QueuedReporter] = []
        self.pbxs: dict[str, PbxLink] = {}
        self._reload_wanted = asyncio.Event()
        self.web: WebServer | None = None
        self.spool: Spool | None = None
        self.drain: SpoolDrain | None = None
        # screen-pop: the builder feeds the hub; the MQTT publisher ([mqtt]) and the web
        # app's WebSockets subscribe to it
        self.pops = PopHub()
        self.cards: CardSource | None = None
        self.mqtt: Any = None

    @property
    def routing_in_process(self) -> bool:
        """The router in its own process (`agi.routing`); a fixed clock (tests) keeps it here."""
        return self.settings.agi.routing == "process" and self._clock is None

    # ------------------------------------------------------------------ building
    def build_reporters(self, store: Any) -> list[QueuedReporter]:
        """The consumers of call facts: the store writer, the callback keeper, the
        screen-pop builder (whose hub the MQTT publisher and the WebSockets follow), and
        the webhook when the config asks for one."""
        s = self.settings
        cards = self.cards = CardSource(self.directory, store, self.routes, s.screenpop.card_timeout_ms / 1000)
        reporters: list[QueuedReporter] = [
            RecordWriter(store, spool=self.spool),
            CallbackKeeper(store, self.directory, desk=s.screenpop.desk),
            PopBuilder(self.pops, cards, extensions=frozenset(m.extension for m in s.managers))]
        if s.webhook is not None:  # its outbox is a table in the spool file
            from callrouter.webhook import WebhookReporter
            from callrouter.webhook.outbox import Outbox
            outbox = Outbox(s.spool.path, s.webhook.max_bytes)
            reporters.append(WebhookReporter(s.webhook, outbox, store))
        return reporters

    def _decision_log(self, store: Any) -> Any:
        url = getattr(store, "url", None)
        if self.settings.agi.decision_log == "process" and isinstance(url, str):
            from callrouter.decisionlog.process import DecisionLogProcess
            return DecisionLogProcess(url, spool=self.spool)
        from callrouter.decisionlog.inline import InlineDecisionLog
        return InlineDecisionLog(store, spool=self.spool)

    async def _build(self, store: Any) -> None:
        s = self.settings
        self.store = store
        await store.upsert_managers(s.managers)
        self.devices = DeviceMap(s.managers)
        self.presence = Presence(self.devices)
        await self.refresh_dnd()
        self.rules = RuleSet(s.rules_dir, s.default_region)  # bad rules fail the start: nothing to fall back to
        self.directory = PhoneDirectory(store)
        self.decision_log = self._decision_log(store)
        self.routes = RouteLog()
        devices = {m.extension: list(m.devices) for m in s.managers if m.devices}
        first_pbx, pbx_names, by_peer = s.pbx[0].name if s.pbx else "main", [p.name for p in s.pbx], pbx_by_address(s.pbx)
        if self.routing_in_process:
            # the router's own directory, rules and presence copy live in the child
            self.agi = RoutingProcess(
                {"database_url": s.database_url, "rules_dir": str(s.rules_dir), "region": s.default_region,
                 "agi": s.agi.model_dump(mode="json"), "devices": devices, "pbx": first_pbx,
                 "pbx_names": pbx_names, "pbx_by_peer": by_peer, "wait_for_directory": self._wait_for_directory,
                 "directory_refresh": DIRECTORY_REFRESH,
                 "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel())},
                host=s.agi.host, port=s.agi.port, recorder=self.decision_log, on_decision=self._decided,
                presence=self.presence)
        else:
            self.router = Router(self.rules, self.directory, self.presence, region=s.default_region,
                                 devices=devices, default_dial=s.agi.default_dial,
                                 default_timeout=s.agi.default_timeout)
            self.agi = FastAgiServer(self.router, s.agi, recorder=self.decision_log, pbx=first_pbx,
                                     pbx_names=pbx_names, pbx_by_peer=by_peer, clock=self._clock,
                                     on_decision=self._decided)
        self.reporters = self.build_reporters(store)
        if s.mqtt is not None:
            from callrouter.screenpop.mqtt import MqttPublisher
            self.mqtt = MqttPublisher(s.mqtt, [p.name for p in s.pbx])
            self.pops.subscribe(self.mqtt)
        self.web = WebServer(self) if s.web.enabled else None
        for cfg in s.pbx:
            tracker = Tracker(cfg.name, self.devices, s.default_region)
            observe = functools.partial(self.presence.apply, source=cfg.name)  # uniqueids are per PBX
            calllog = CallLog(tracker, self.reporters, observers=[observe], enrich=self.routes.enrich)
            self.pbxs[cfg.name] = PbxLink(cfg, calllog)

    # ------------------------------------------------------------------ running
    async def run(self, stop: asyncio.Event) -> None:
        self.spool = Spool(self.settings.spool.path, self.settings.spool.max_bytes)
        try:
            await self._run(stop)
        finally:
            held = self.spool.depth()
            if held:
                log.warning("spool %s holds %d item(s) not yet in the database; they are stored when the "
                            "daemon next runs with the database up", self.spool.path, held)
            self.spool.close()

    @contextlib.asynccontextmanager
    async def _open_store(self) -> AsyncIterator[Store]:
        from callrouter.store import SchemaNotCurrent
        store = Store(self.settings.database_url)
        try:
            await store.__aenter__()
        except SchemaNotCurrent:
            raise
        except Exception as e:
            await _aiosqlite_threads_done()
            raise StartupError(f"cannot open the database {_safe_url(self.settings.database_url)} "
                               f"(database_url): {_why(e)}") from e
        try:
            yield store
        finally:
            await store.close()

    async def _listen(self, what: str, key: str, host: str, port: int, start: Callable[[], Any]) -> None:
        try:
            await start()
        except OSError as e:
            raise StartupError(f"{what} cannot listen on {host}:{port} ({key}): {_why(e)}") from e

    async def _run(self, stop: asyncio.Event) -> None:
        assert self.spool is not None
        async with self._open_store() as store:
            try:
                await self._build(store)
            except RulesError as e:  # bad rules fail the start: nothing to fall back to
                raise StartupError(f"rules ({self.settings.rules_dir}, rules_dir): {e}") from e
            self.drain = SpoolDrain(self.spool, store)
            assert self.agi is not None and self.directory is not None
            agi, web = self.settings.agi, self.settings.web
            try:
                await self._listen("FastAGI", "agi.port", agi.host, agi.port, self.agi.start)
            except (RoutingProcessError, TimeoutError) as e:
                raise StartupError(f"routing: {str(e) or 'the routing process did not start in time'}") from e
            log.info("routing: FastAGI on %s:%d", self.agi.host, self.agi.port)
            if self.web is not None:
                try:
                    await self._listen("the web API", "web.port", web.host, web.port, self.web.start)
                except BaseException:
                    await self.agi.close(0)
                    raise
            client_changes = ClientChangeFeed(store)
            await client_changes.start()  # before the directory loads: nothing in between is missed
            periodic: list[asyncio.Task] = []
            async with asyncio.TaskGroup() as tg:
                log_task = tg.create_task(self.decision_log.run(), name="decision-log")
                routing = (tg.create_task(self.agi.run(), name="routing-process")
                           if isinstance(self.agi, RoutingProcess) else None)
                reporting = [tg.create_task(r.run(), name=f"reporter-{r.name}") for r in self.reporters]
                mqtt_task = tg.create_task(self.mqtt.run(), name="mqtt") if self.mqtt is not None else None
                loading = tg.create_task(self._load_directory(), name="directory-load")
                if self._wait_for_directory:
                    await asyncio.wait([loading])
                periodic.append(tg.create_task(self._refresh_directory(loading), name="directory-refresh"))
                periodic.append(tg.create_task(self._every(DND_REFRESH, self.refresh_dnd), name="dnd-refresh"))
                periodic.append(tg.create_task(self._reloader(), name="reloader"))
                periodic.append(tg.create_task(client_changes.run(self._apply_client_changes),
                                               name="client-changes"))
                periodic.append(tg.create_task(self.drain.run(), name="spool-drain"))
                pbx_tasks = [tg.create_task(self._run_pbx(link, stop), name=f"pbx-{name}")
                             for name, link in self.pbxs.items()]
                self.started.set()
                await stop.wait()
                await self._stop(pbx_tasks, reporting, log_task, periodic)
                if mqtt_task is not None:
                    # what the builder published is out (or dropped), "offline" said, then gone
                    await self.mqtt.close(0.5)
                    mqtt_task.cancel()
                # the stop is bounded: a part still running past its budget (a source stuck
                # reconnecting, a writer stuck in a driver call) is cancelled, never waited for
                stragglers = [t for t in (*pbx_tasks, *reporting, log_task, loading, routing)
                              if t is not None and not t.done()]
                for t in stragglers:
                    log.warning("stopping: %s did not end within the stop budget; cancelled", t.get_name())
                    t.cancel()
            log.info("stopped: %d call record(s) written",
                     sum(r.stats["saved"] for r in self.reporters if isinstance(r, RecordWriter)))

    async def _stop(self, pbx_tasks: list[asyncio.Task], reporting: list[asyncio.Task], log_task: asyncio.Task,
                    periodic: list[asyncio.Task]) -> None:
        """Everything within STOP_BUDGET: each step gets what is left of it."""
        assert self.agi is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + STOP_BUDGET

        def left(reserve: float = 0.0) -> float:
            return max(0.1, end - loop.time() - reserve)

        if self.web is not None:
            try:
                await asyncio.wait_for(self.web.close(), left(5.5))
            except TimeoutError:
                log.warning("the web server did not close in time")
        await self.agi.close(min(STOP_GRACE, left(5.0)))
        try:
            await asyncio.wait_for(asyncio.gather(*(link.source.aclose() for link in self.pbxs.values())), left(4.0))
        except TimeoutError:
            log.warning("the AMI sources did not close in time")
        if pbx_tasks:
            await asyncio.wait(pbx_tasks, timeout=left(4.0))  # calls in flight become incomplete records
        for t in periodic:  # the drain too: what it holds stays in the spool
            t.cancel()
        # the writers and the decision log in parallel; each abandons a hung save at its
        # deadline and hands what it holds to the spool (ABANDON_WAIT, then an fsync)
        await asyncio.gather(*(r.close(min(DRAIN_TIMEOUT, left(1.5))) for r in self.reporters),
                             self.decision_log.close(min(DRAIN_TIMEOUT, left(0.5))))
        await asyncio.wait([*reporting, log_task], timeout=left())
        if self.spool is not None:
            log.info("stopping: %d item(s) in the spool", self.spool.depth())

    def _decided(self, call: Any) -> None:
        """FastAGI `on_decision`, after the answer is written: the route log (joins
        the decision to the call record) and the latency histogram."""
        assert self.routes is not None
        self.routes.add(call)
        if self.cards is not None:  # the screen-pop's history, fetched before the phone rings
            self.cards.prefetch((call.pbx, call.linkedid), call.decision.client_id)
        if self.web is not None:
            self.web.on_decision(call)

    async def _run_pbx(self, link: PbxLink, stop: asyncio.Event) -> None:
        calllog = link.calllog
        try:
            async with link.source as source:
                await follow(source.events(), calllog)
            if not stop.is_set():
                log.error("%s: the AMI source gave up; stopping", link.cfg.name)
                stop.set()
        finally:
            open_calls = calllog.tracker.calls_in_flight
            calllog.close(STOPPED_MID_CALL)
            log.info("%s: stopped; %d call(s) in flight written as incomplete", link.cfg.name, open_calls)

    async def _load_directory(self) -> None:
        assert self.directory is not None
        try:
            await self.directory.load()
        except Exception:  # noqa: BLE001 - routing asks the store until a refresh works
            log.exception("phone directory: first load failed; routing asks the store until a refresh works")
        if FREEZE_AFTER_LOAD:
            # what start-up made (modules, the config, the directory) lives as long as the
            # daemon: out of the collector's reach, a full collection during a burst of calls
            # walks only what calls make (gc.freeze: the permanent generation)
            gc.collect()
            gc.freeze()

    async def _refresh_directory(self, first_load: asyncio.Task) -> None:
        assert self.directory is not None
        await asyncio.wait([first_load])
        await self.directory.run_refresher(DIRECTORY_REFRESH)

    @staticmethod
    async def _every(interval: float, fn: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            await fn()

    # ------------------------------------------------------------------ what others ask of it
    async def refresh_dnd(self) -> None:
        assert self.presence is not None
        try:
            self.presence.load_dnd(await self.store.dnd_extensions())
        except Exception:  # noqa: BLE001 - keep the DND set we have
            log.exception("could not read DND from the store; keeping the previous DND set")

    async def set_dnd(self, extension: str, on: bool) -> None:
        """DND in the store and at once in routing."""
        assert self.presence is not None
        await self.store.set_dnd(extension, on)
        self.presence.set_dnd(extension, on)

    async def clients_changed(self, ids: list[str]) -> None:
        """Clients were upserted or deleted in the store: routing sees them at once."""
        if self.directory is not None and ids:
            await self.directory.refresh_clients(ids)
        if isinstance(self.agi, RoutingProcess) and ids:
            self.agi.clients_changed(ids)

    async def _apply_client_changes(self, ids: frozenset[str] | None) -> None:
        """Clients changed by another process (the change feed); None: too many, reload all."""
        if ids is not None:
            await self.clients_changed(sorted(ids))
        else:
            if isinstance(self.agi, RoutingProcess):
                self.agi.clients_changed(None)
            if self.directory is not None:
                await self.directory.refresh()

    def reload(self) -> None:
        """SIGHUP: the rules (a bad file keeps the old ones) and DND from the store, done by
        the reloader task; signals that arrive meanwhile make one more reload, not many."""
        self._reload_wanted.set()

    async def _reloader(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            if self.rules is not None:
                self.rules.reload()
            if isinstance(self.agi, RoutingProcess):
                self.agi.reload_rules()
            await self.refresh_dnd()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            pbx=tuple(PbxSnapshot(name, link.source.connected, tuple(link.calllog.tracker.live_calls()))
                      for name, link in self.pbxs.items()),
            presence=self.presence.snapshot() if self.presence is not None else {})

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, link in self.pbxs.items():
            for k, v in link.calllog.stats.items():
                out[f"calllog.{name}.{k}"] = v
            out[f"calllog.{name}.in_flight"] = link.calllog.tracker.calls_in_flight
        for r in self.reporters:
            for k, v in r.stats.items():
                out[f"reporter.{r.name}.{k}"] = v
            out[f"reporter.{r.name}.depth"] = r.depth
        for k, v in self.pops.stats.items():
            out[f"screenpop.{k}"] = v
        if self.cards is not None:
            for k, v in self.cards.stats.items():
                out[f"screenpop.{k}"] = v
        if self.mqtt is not None:
            for k, v in self.mqtt.stats.items():
                out[f"mqtt.{k}"] = v
            out["mqtt.connected"] = int(self.mqtt.connected)
            out["mqtt.depth"] = self.mqtt.depth
        if self.agi is not None:
            for k, v in self.agi.stats.items():
                out[f"agi.{k}"] = v
        if self.decision_log is not None:
            for k, v in self.decision_log.stats.items():
                out[f"decision_log.{k}"] = v
            out["decision_log.pending"] = self.decision_log.pending
        if self.spool is not None:
            out["spool.depth"] = self.spool.depth()   # items waiting for the database, every kind
            out["spool.bytes"] = self.spool.size()
            for k, v in self.spool.stats.items():    # spooled, refused (full) in this process
                out[f"spool.{k}"] = v
        if self.drain is not None:
            for k, v in self.drain.stats.items():    # <kind>-drained, <kind>-dead
                out[f"spool.{k}"] = v
        return out


def install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, reload: Callable[[], Any]) -> None:
    """SIGTERM/SIGINT stop; SIGHUP reloads (where the platform has it)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def _on_hup() -> None:
        try:
            reload()
        except Exception:  # noqa: BLE001 - a reload must never take the daemon down
            log.exception("SIGHUP reload failed")

    try:
        loop.add_signal_handler(signal.SIGHUP, _on_hup)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        log.warning("SIGHUP reload not available on this platform")


def run_daemon(settings: Settings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        daemon = Daemon(settings)
        install_signals(asyncio.get_running_loop(), stop, daemon.reload)
        await daemon.run(stop)

    asyncio.run(main())
