"""MqttPublisher: pops to an MQTT broker (aiomqtt), QoS 1.

    callrouter/<pbx>/agents/<extension>/ringing|answered|ended   the Pop as JSON
    callrouter/<pbx>/status                                      "online" / "offline", retained

The prefix is `[mqtt] topic_prefix`; `/`, `+` and `#` in an extension become `_` (MQTT
reserves them). "offline" is the connection's last will (the broker says it when the
daemon vanishes) and is also published on a clean stop.

A hub subscriber: `offer` never waits. While the broker is away pops are dropped at once
(counted `dropped`, a throttled log line): a pop is only worth showing while the phone
rings, so nothing is kept for later. Connected, pops wait in a bounded queue (full:
dropped and counted); one older than STALE_AFTER when its turn comes is dropped
(`stale`). `run` is the reconnect loop, a task the daemon's TaskGroup owns.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Sequence

import aiomqtt

from callrouter.config import MqttConfig
from callrouter.logthrottle import throttled

from .model import Pop

log = logging.getLogger(__name__)

STALE_AFTER = 30.0      # s: a pop still queued after this is of no use to anyone
PUBLISH_TIMEOUT = 5.0   # s: a QoS 1 publish not acknowledged by then counts as failed
CONNECT_TIMEOUT = 5.0   # s


def _safe(part: str) -> str:
    return part.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


class MqttPublisher:
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, pbxs: Sequence[str]):
        self.cfg = cfg
        self.pbxs = tuple(pbxs) or ("main",)
        self._queue: asyncio.Queue[tuple[float, Pop]] = asyncio.Queue(cfg.queue_size)
        self.connected = False
        self.stats: Counter[str] = Counter()
        self._stopping = False

    # ---------------------------------------------------------------- topics
    def topic(self, pop: Pop) -> str:
        return f"{self.cfg.topic_prefix}/{_safe(pop.pbx)}/agents/{_safe(pop.extension)}/{pop.event}"

    def status_topic(self, pbx: str) -> str:
        return f"{self.cfg.topic_prefix}/{_safe(pbx)}/status"

    # ---------------------------------------------------------------- the hub's side
    def offer(self, pop: Pop) -> bool:
        if not self.connected:
            self._dropped("broker not connected")
            return False
        try:
            self._queue.put_nowait((time.monotonic(), pop))
            return True
        except asyncio.QueueFull:
            self._dropped("publish queue full")
            return False

    def _dropped(self, why: str) -> None:
        self.stats["dropped"] += 1
        throttled(log, "mqtt-drop", logging.WARNING, "screen-pop: MQTT pop dropped (%s); %d dropped so far",
                  why, self.stats["dropped"])

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    # ---------------------------------------------------------------- the connection
    def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        return aiomqtt.Client(
            cfg.host, cfg.port, username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password is not None else None,
            identifier=cfg.client_id or f"callrouter-{self.pbxs[0]}",
            will=aiomqtt.Will(self.status_topic(self.pbxs[0]), b"offline", qos=1, retain=True),
            tls_context=ssl.create_default_context() if cfg.tls else None,
            keepalive=cfg.keepalive, timeout=CONNECT_TIMEOUT, logger=log)

    async def run(self) -> None:
        delay = self.cfg.reconnect_min
        while not self._stopping:
            try:
                async with self._client() as client:
                    for pbx in self.pbxs:
                        await client.publish(self.status_topic(pbx), b"online", qos=1, retain=True,
                                             timeout=PUBLISH_TIMEOUT)
                    self.connected = True
                    self.stats["connects"] += 1
                    log.info("screen-pop: MQTT connected to %s:%d", self.cfg.host, self.cfg.port)
                    delay = self.cfg.reconnect_min
                    try:
                        await self._publish_loop(client)
                    finally:
                        self.connected = False
                        if self._stopping:
                            await self._say_offline(client)
            except aiomqtt.MqttError as e:
                self.connected = False
                self._drain_queue()
                self.stats["disconnects"] += 1
                throttled(log, "mqtt-down", logging.WARNING, "screen-pop: MQTT broker %s:%d: %s; retrying in %.1f s",
                          self.cfg.host, self.cfg.port, e, delay)
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.reconnect_max)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            queued_at, pop = await self._queue.get()
            if time.monotonic() - queued_at > STALE_AFTER:
                self.stats["stale"] += 1
                continue
            try:
                await client.publish(self.topic(pop), pop.json_bytes(), qos=1, timeout=PUBLISH_TIMEOUT)
            except aiomqtt.MqttError:
                self._dropped("publish failed")
                raise
            self.stats["published"] += 1

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        for pbx in self.pbxs:
            try:
                await client.publish(self.status_topic(pbx), b"offline", qos=1, retain=True, timeout=1.0)
            except aiomqtt.MqttError:
                break

    def _drain_queue(self) -> None:
        """Pops queued for a connection that is gone: dropped, counted (never kept for later)."""
        while not self._queue.empty():
            self._queue.get_nowait()
            self._dropped("broker connection lost")

    async def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (within `timeout`), say offline, disconnect: the caller
        then cancels `run`'s task."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.connected and not self._queue.empty() and loop.time() < end:
            await asyncio.sleep(0.02)
