"""The real MQTT broker for tests (CALLROUTER_TEST_MQTT_URL, e.g. mqtt://127.0.0.1:1883):
its address, a topic prefix private to one test (other runs share the broker), and a
subscriber that collects what arrives."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiomqtt
import pytest

MQTT_URL_ENV = "CALLROUTER_TEST_MQTT_URL"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    prefix: str  # private to one test


def broker() -> Broker:
    url = os.environ.get(MQTT_URL_ENV)
    if not url:
        pytest.skip(f"{MQTT_URL_ENV} not set (e.g. mqtt://127.0.0.1:1883): no MQTT broker to test against")
    u = urlsplit(url)
    return Broker(u.hostname or "127.0.0.1", u.port or 1883, f"crtest-{secrets.token_hex(4)}")


@dataclass
class Received:
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)  # topic, payload, retain

    def pops(self, prefix: str) -> list[tuple[str, str, dict]]:
        """(extension, event, payload) of every pop, in arrival order."""
        out = []
        for topic, payload, _ in self.messages:
            parts = topic[len(prefix) + 1:].split("/")
            if len(parts) == 4 and parts[1] == "agents":
                out.append((parts[2], parts[3], json.loads(payload)))
        return out

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < n:
                await asyncio.sleep(0.01)


@asynccontextmanager
async def subscribed(b: Broker, topic: str = "#"):
    """A subscriber on `<prefix>/<topic>`, collecting in the background."""
    got = Received()
    async with aiomqtt.Client(b.host, b.port, identifier=f"{b.prefix}-sub", timeout=5) as client:
        await client.subscribe(f"{b.prefix}/{topic}", qos=1)

        async def collect() -> None:
            async for m in client.messages:
                got.messages.append((str(m.topic), bytes(m.payload), bool(m.retain)))  # type: ignore[arg-type]
        task = asyncio.create_task(collect())
        try:
            yield got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
