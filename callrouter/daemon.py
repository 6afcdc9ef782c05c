"""`callrouter run`: AMI in, call records out to the store, until SIGTERM/SIGINT.

One TaskGroup owns the long-lived tasks (a pipeline per PBX, the store writer). On a
stop signal every AMI source is closed, events already read are still reduced, calls
still in flight are written as incomplete records, the writer drains, then we exit.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from callrouter.ami.client import AmiSource
from callrouter.config import DeviceMap, PbxConfig, Settings
from callrouter.pipeline import flush, track
from callrouter.reporters import Reporter, StoreWriter
from callrouter.store import Store
from callrouter.tracker import Tracker

log = logging.getLogger(__name__)


async def _close_when(stop: asyncio.Event, source: AmiSource) -> None:
    await stop.wait()
    await source.aclose()


async def run_pbx(cfg: PbxConfig, settings: Settings, reporters: list[Reporter], stop: asyncio.Event) -> None:
    tracker = Tracker(cfg.name, DeviceMap(settings.managers), settings.default_region)
    try:
        async with AmiSource(cfg) as source, asyncio.TaskGroup() as tg:
            tg.create_task(_close_when(stop, source), name=f"stop-{cfg.name}")
            await track(source.events(), tracker, reporters)
            stop.set()  # the source ended by itself (gave up): stop everything cleanly
    finally:
        open_calls = tracker.calls_in_flight
        await flush(tracker, reporters, "daemon stopped with the call in progress")
        log.info("%s: stopped; %d call(s) in flight written as incomplete", cfg.name, open_calls)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    async with Store(settings.database_url) as store:
        await store.upsert_managers(settings.managers)
        writer = StoreWriter(store)
        reporters: list[Reporter] = [writer]
        async with asyncio.TaskGroup() as tg:
            writing = tg.create_task(writer.run(), name="store-writer")
            try:
                async with asyncio.TaskGroup() as pbxs:
                    for cfg in settings.pbx:
                        pbxs.create_task(run_pbx(cfg, settings, reporters, stop), name=f"pbx-{cfg.name}")
            finally:
                await writer.close()
            await writing
        log.info("stopped: %d call record(s) written", writer.saved)


def run(settings: Settings) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
