"""How the daemon's child processes (the decision log, the routing process) start.

`run_child(child, what)`: SIGINT/SIGTERM ignored (they reach the whole process group; the
daemon decides when a child ends, by closing its stdin), optionally a lower CPU priority,
stdout kept for the child's frames to the daemon (passed to `child` as a binary file) and
fd 1 pointed at stderr so that anything else printed lands in the daemon's log, then
`child(out)` run to its exit code; an exception is logged (the daemon restarts the child).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn


def run_child(child: Callable[[Any], Awaitable[int]], what: str, *, niceness: int = 0) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    try:
        code = asyncio.run(child(out))
    except Exception:  # noqa: BLE001 - tell the daemon's log why, then let it restart us
        logging.getLogger(__name__).exception("%s failed", what)
        code = 1
    os._exit(code)
