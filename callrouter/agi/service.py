"""RoutingService: everything the daemon starts for routing, in one object.

    presence = Presence(DeviceMap(settings.managers))      # feed it every AMI event
    service = await RoutingService.start(settings, store, presence=presence)
    ...                                                     # AMI loop: presence.apply(event)
    await service.close()

`start` loads the rules (a bad rules directory fails the start: there is nothing
to fall back to yet), loads DND from the store, builds the phone directory (calls
arriving meanwhile are routed through the store), starts the decision log (its own
process, see callrouter.decisionlog), the FastAGI server, the periodic refreshes,
and SIGHUP handling (reload rules and DND).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

from callrouter.agi.server import FastAgiServer
from callrouter.config import Settings
from callrouter.decisionlog.inline import InlineDecisionLog
from callrouter.decisionlog.process import DecisionLogProcess
from callrouter.devices import DeviceMap
from callrouter.presence import Presence
from callrouter.routing.decision import RoutedCall
from callrouter.routing.lookup import PhoneDirectory
from callrouter.routing.router import Router
from callrouter.routing.rules import RuleSet

log = logging.getLogger(__name__)


class RoutingService:
    def __init__(self, settings: Settings, store: Any, *, presence: Presence | None = None,
                 rules: RuleSet | None = None, directory: PhoneDirectory | None = None,
                 host: str | None = None, port: int | None = None, clock: Callable[[], datetime] | None = None,
                 directory_refresh: float = 300.0, dnd_refresh: float = 15.0, recorder_queue: int = 10_000,
                 on_decision: Callable[[RoutedCall], None] | None = None):
        self.settings = settings
        self.store = store
        self.presence = presence or Presence(DeviceMap(settings.managers))
        self.rules = rules or RuleSet(settings.rules_dir, settings.default_region)
        self.directory = directory or PhoneDirectory(store)
        self.router = Router(self.rules, self.directory, self.presence, region=settings.default_region,
                             devices={m.extension: m.devices for m in settings.managers if m.devices},
                             default_dial=settings.agi.default_dial, default_timeout=settings.agi.default_timeout)
        url = getattr(store, "url", None)
        self.recorder: DecisionLogProcess | InlineDecisionLog
        if settings.agi.decision_log == "process" and isinstance(url, str):
            self.recorder = DecisionLogProcess(url, maxsize=recorder_queue)
        else:
            self.recorder = InlineDecisionLog(store, maxsize=recorder_queue)
        self.server = FastAgiServer(self.router, settings.agi, recorder=self.recorder,
                                    pbx=settings.pbx[0].name if settings.pbx else "main",
                                    pbx_by_peer={p.host: p.name for p in settings.pbx}, clock=clock,
                                    host=host, port=port, on_decision=on_decision)
        self._directory_refresh = directory_refresh
        self._dnd_refresh = dnd_refresh
        self._tasks: list[asyncio.Task] = []
        self._log_task: asyncio.Task | None = None
        self._sighup = False

    @classmethod
    async def start(cls, settings: Settings, store: Any, **kwargs: Any) -> RoutingService:
        wait_for_directory = kwargs.pop("wait_for_directory", False)
        self = cls(settings, store, **kwargs)
        await self.refresh_dnd()
        self._log_task = asyncio.create_task(self.recorder.run(), name="route-decision-log")
        await self.server.start()
        load = asyncio.create_task(self._load_directory(), name="phone-directory-load")
        self._tasks.append(load)
        if wait_for_directory:
            await asyncio.shield(load)
        self._tasks.append(asyncio.create_task(self._refresh_directory(load), name="phone-directory-refresh"))
        self._tasks.append(asyncio.create_task(self._every(self._dnd_refresh, self.refresh_dnd), name="dnd-sync"))
        try:
            self.rules.install_sighup(also=[lambda: asyncio.ensure_future(self.refresh_dnd())])
            self._sighup = True
        except (NotImplementedError, RuntimeError, ValueError):
            log.warning("SIGHUP reload not available on this platform")
        return self

    @property
    def port(self) -> int:
        return self.server.port

    async def refresh_dnd(self) -> None:
        try:
            self.presence.load_dnd(await self.store.dnd_extensions())
        except Exception:  # noqa: BLE001 - keep the DND set we have
            log.exception("could not read DND from the store; keeping the previous DND set")

    async def set_dnd(self, extension: str, on: bool) -> None:
        """Set DND in the store and at once in routing (the API/CLI calls this)."""
        await self.store.set_dnd(extension, on)
        self.presence.set_dnd(extension, on)

    async def _load_directory(self) -> None:
        try:
            await self.directory.load()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("phone directory: first load failed; routing asks the store until a refresh works")

    async def _refresh_directory(self, first_load: asyncio.Task) -> None:
        await asyncio.wait([first_load])
        await self.directory.run_refresher(self._directory_refresh)

    async def _every(self, interval: float, fn: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            await fn()

    async def close(self) -> None:
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.server.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.recorder.close()  # ... and its run() returns
        if self._log_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._log_task, 5.0)
            self._log_task = None
