"""`callrouter run`: the router (FastAGI) and the call log (AMI -> store), until SIGTERM/SIGINT.

One TaskGroup owns the long-lived tasks (a pipeline per PBX, the store writer); the
routing service (FastAGI server, decision writer, directory refresh) is started before
them and closed after them. On a stop signal every AMI source is closed, events already
read are still reduced, calls still in flight are written as incomplete records, the
writer drains, then we exit.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from callrouter.agi.service import RoutingService
from callrouter.ami.client import AmiSource
from callrouter.config import PbxConfig, Settings
from callrouter.devices import DeviceMap
from callrouter.pipeline import flush, track
from callrouter.presence import Presence
from callrouter.reporters import Reporter, StoreWriter
from callrouter.routelog import RouteLog
from callrouter.store import Store
from callrouter.tracker import Tracker

log = logging.getLogger(__name__)


async def _close_when(stop: asyncio.Event, source: AmiSource) -> None:
    await stop.wait()
    await source.aclose()


async def run_pbx(cfg: PbxConfig, settings: Settings, reporters: list[Reporter], stop: asyncio.Event, *,
                  presence: Presence | None = None, routes: RouteLog | None = None) -> None:
    tracker = Tracker(cfg.name, DeviceMap(settings.managers), settings.default_region)
    enrich = routes.enrich if routes is not None else None
    try:
        async with AmiSource(cfg) as source, asyncio.TaskGroup() as tg:
            tg.create_task(_close_when(stop, source), name=f"stop-{cfg.name}")
            await track(source.events(), tracker, reporters,
                        observe=presence.apply if presence is not None else None, enrich=enrich)
            stop.set()  # the source ended by itself (gave up): stop everything cleanly
    finally:
        open_calls = tracker.calls_in_flight
        await flush(tracker, reporters, "daemon stopped with the call in progress", enrich)
        log.info("%s: stopped; %d call(s) in flight written as incomplete", cfg.name, open_calls)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with Store(settings.database_url) as store:
        await store.upsert_managers(settings.managers)
        presence = Presence(DeviceMap(settings.managers))
        routes = RouteLog()
        routing = await RoutingService.start(settings, store, presence=presence, on_decision=routes.add)
        log.info("routing: FastAGI on %s:%d", settings.agi.host, routing.port)
        try:
            writer = StoreWriter(store)
            reporters: list[Reporter] = [writer]
            async with asyncio.TaskGroup() as tg:
                writing = tg.create_task(writer.run(), name="store-writer")
                try:
                    async with asyncio.TaskGroup() as pbxs:
                        for cfg in settings.pbx:
                            pbxs.create_task(run_pbx(cfg, settings, reporters, stop, presence=presence,
                                                     routes=routes), name=f"pbx-{cfg.name}")
                finally:
                    await writer.close()
                await writing
            log.info("stopped: %d call record(s) written", writer.saved)
        finally:
            await routing.close()


def run(settings: Settings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
