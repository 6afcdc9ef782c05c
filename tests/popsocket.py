"""A pop WebSocket (`/api/pops/ws`) read in the background, for the tests that watch pops."""
from __future__ import annotations

import asyncio
import json

import aiohttp


class PopListener:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.pops: list[dict] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.pops.append(json.loads(msg.data))

    def seen(self) -> list[tuple[str, str]]:
        return [(p["extension"], p["event"]) for p in self.pops]

    async def wait_for(self, n: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.pops) < n:
                await asyncio.sleep(0.02)
