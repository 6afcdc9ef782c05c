"""Throttled logging: a flood of one kind of problem must not flood the log."""
from __future__ import annotations

import logging
import time
from collections import Counter


class Throttle:
    """Log a kind of problem at most once per `interval` s (a flood must not flood the log).
    Kinds are per logger: one module's "timeout" does not silence another's."""

    def __init__(self, interval: float = 5.0):
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def __call__(self, logger: logging.Logger, kind: str, level: int, msg: str, *args: object) -> None:
        key = (logger.name, kind)
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self._interval:
            self._suppressed[key] += 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += f" ({n} more like this suppressed)"
        logger.log(level, msg, *args)


throttled = Throttle()
