"""Wait in a test until an async condition holds (polling), or fail naming it."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0,
                     what: str = "the condition", interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise AssertionError(f"not reached within {timeout:.0f} s: {what}")
        await asyncio.sleep(interval)
