"""Prometheus metrics: the daemon's own counters read at scrape time (a custom
collector over `Daemon.counters()` and `snapshot()`: nothing on the hot paths), plus
one histogram of routing latency observed from the FastAGI `on_decision` hook (one
`observe()`, about a microsecond, after the answer is written)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# seconds; the FastAGI deadline is 0.3 s by default
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


class DaemonCollector(Collector):
    def __init__(self, daemon: Any):
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        counters: dict[str, int] = self._daemon.counters()
        events = CounterMetricFamily("callrouter_ami_events", "AMI events read, per PBX", labels=["pbx"])
        calls = CounterMetricFamily("callrouter_calls_finished", "Call records finished, per PBX", labels=["pbx"])
        live = GaugeMetricFamily("callrouter_calls_in_progress", "Calls in progress, per PBX", labels=["pbx"])
        up = GaugeMetricFamily("callrouter_ami_connected", "1 when the AMI link is up", labels=["pbx"])
        depth = GaugeMetricFamily("callrouter_reporter_queue_depth", "Facts waiting in a reporter's queue",
                                  labels=["reporter"])
        reported = CounterMetricFamily("callrouter_reporter_items", "Reporter items by result",
                                       labels=["reporter", "result"])
        decisions = CounterMetricFamily("callrouter_decisions", "Routing decisions by what became of them",
                                        labels=["result"])
        pending = GaugeMetricFamily("callrouter_decision_log_pending", "Decisions not yet stored")
        spooled = GaugeMetricFamily("callrouter_spool_items", "Items waiting in the local spool for the database")
        spool_bytes = GaugeMetricFamily("callrouter_spool_bytes", "Payload bytes held by the local spool")
        agi = CounterMetricFamily("callrouter_agi_requests", "FastAGI requests by how they ended",
                                  labels=["outcome"])
        outbox = GaugeMetricFamily("callrouter_webhook_outbox_items", "Finished calls waiting to be POSTed")
        for p in self._daemon.snapshot().pbx:
            # per PBX always, at 0 before the first event (a Counter holds no zeros)
            up.add_metric([p.name], 1.0 if p.connected else 0.0)
            events.add_metric([p.name], counters.get(f"calllog.{p.name}.events", 0))
            calls.add_metric([p.name], counters.get(f"calllog.{p.name}.calls", 0))
        for key, value in counters.items():
            room, _, rest = key.partition(".")
            name, _, stat = rest.rpartition(".")
            if room == "calllog":
                if stat == "in_flight":
                    live.add_metric([name], value)
            elif room == "reporter":
                if stat == "depth":
                    depth.add_metric([name], value)
                elif stat in ("saved", "dropped", "failed", "delivered", "retried", "refused", "dead"):
                    reported.add_metric([name, stat], value)  # the last four: the webhook's POSTs
                elif stat == "outbox":
                    outbox.add_metric([], value)
            elif key == "spool.depth":
                spooled.add_metric([], value)
            elif key == "spool.bytes":
                spool_bytes.add_metric([], value)
            elif room == "decision_log" and rest == "pending":
                pending.add_metric([], value)
            elif room == "agi":
                agi.add_metric([rest], value)
        for result, key in (("stored", "decisions"), ("dropped", "dropped"), ("failed", "decision-failed")):
            decisions.add_metric([result], counters.get(f"decision_log.{key}", 0))
        yield from (events, calls, live, up, depth, reported, decisions, pending, spooled, spool_bytes, agi, outbox)


class Metrics:
    """One registry per web app (several daemons in one test process do not collide)."""

    def __init__(self, daemon: Any):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(DaemonCollector(daemon))
        from .pops import ScreenPopCollector
        self.registry.register(ScreenPopCollector(daemon))
        self.route_latency = Histogram("callrouter_route_latency_seconds",
                                       "FastAGI: connection accepted to the answer written",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)

    def on_decision(self, call: Any) -> None:
        self.route_latency.observe(call.latency_ms / 1000.0)
