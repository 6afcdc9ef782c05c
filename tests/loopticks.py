"""How often the event loop let other tasks run while something else worked: a task that
counts its turns (the check that a long job yields)."""
from __future__ import annotations

import asyncio


class LoopTicks:
    """`async with LoopTicks() as ticks: ...`, then `ticks.during`: the turns taken inside."""

    def __init__(self) -> None:
        self.during = 0
        self._n = 0
        self._on = True
        self._task: asyncio.Task | None = None

    async def _tick(self) -> None:
        while self._on:
            self._n += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTicks:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker is running
        self._start = self._n
        return self

    async def __aexit__(self, *exc) -> None:
        self.during = self._n - self._start
        self._on = False
        await self._task
