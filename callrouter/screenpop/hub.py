"""PopHub: one pop to every subscriber (the MQTT publisher, each WebSocket), in process.

`publish` never waits: each subscriber's `offer` queues the pop in its own bounded queue
or drops it (counted by the subscriber), so a slow browser or a broker outage never holds
the others or the builder."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

from .model import Pop

log = logging.getLogger(__name__)


class PopSink(Protocol):
    def offer(self, pop: Pop) -> bool: ...


class PopHub:
    def __init__(self) -> None:
        self._sinks: list[PopSink] = []
        self.stats: Counter[str] = Counter()

    def subscribe(self, sink: PopSink) -> None:
        self._sinks.append(sink)

    def unsubscribe(self, sink: PopSink) -> None:
        try:
            self._sinks.remove(sink)
        except ValueError:
            pass

    def sinks(self) -> tuple[PopSink, ...]:
        return tuple(self._sinks)

    @property
    def subscribers(self) -> int:
        return len(self._sinks)

    def publish(self, pop: Pop) -> None:
        self.stats[pop.event] += 1
        for sink in tuple(self._sinks):
            try:
                sink.offer(pop)
            except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others
                self.stats["sink-errors"] += 1
                log.exception("screen-pop: %s refused a pop", type(sink).__name__)
