"""Screen-pops on the real MQTT broker: every recorded scenario, served by the fake AMI
server over TCP and read by the AMI source, publishes exactly the expected ringing /
answered / ended messages to the right agents' topics; a broker outage drops pops
(counted) while calls are still logged; the daemon wires it all from `[mqtt]`."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from callrouter.ami.client import AmiSource
from callrouter.calllog.reporters import RecordCollector
from callrouter.calllog.walk import CallLog, follow
from callrouter.config import MqttConfig, PbxConfig
from callrouter.routing.lookup import PhoneDirectory
from callrouter.screenpop.builder import CardSource, PopBuilder
from callrouter.screenpop.hub import PopHub
from callrouter.screenpop.mqtt import MqttPublisher
from callrouter.store import Client
from callrouter.tracker import Tracker
from fakeami import FakeAmi, load_recording
from mqttfixture import Broker, broker, subscribed

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
CLIENT = Client(id="c-1001", name="ООО Ромашка", owner_extension="101", monthly_turnover=120000.0, tier="wholesale",
                phones=("+79161234567",))

R, A, E = "ringing", "answered", "ended"
# (extension, event, result of `ended`) per scenario; a queue's Local channel is no agent
EXPECTED: dict[str, list[tuple[str, str, str | None]]] = {
    "anonymous": [("130", R, None), ("130", A, None), ("130", E, "answered")],
    "answered_owner": [("101", R, None), ("101", A, None), ("101", E, "answered")],
    "blind_transfer": [("101", R, None), ("101", A, None), ("101", E, "answered"),
                       ("104", R, None), ("104", A, None), ("104", E, "answered")],
    "caller_abandons": [("101", R, None), ("101", E, "cancelled")],
    "caller_hangs_up": [("101", R, None), ("101", A, None), ("101", E, "answered")],
    "outbound_click_to_call": [],
    "outbound_no_answer": [],
    "owner_busy_fallback": [("103", R, None), ("103", E, "busy"), ("121", R, None), ("121", A, None),
                            ("121", E, "answered")],
    "owner_noanswer_fallback": [("102", R, None), ("102", E, "no-answer"), ("120", R, None), ("120", A, None),
                                ("120", E, "answered")],
    "owner_offline_fallback": [("108", R, None), ("108", E, "unavailable"), ("120", R, None), ("120", A, None),
                               ("120", E, "answered")],
    "queue_abandon": [("130", R, None), ("130", E, "cancelled")],
    "queue_answered": [("121", R, None), ("121", E, "busy"), ("120", R, None), ("120", A, None),
                       ("120", E, "answered")],
    "ring_group": [("106", R, None), ("107", R, None), ("106", E, "cancelled"), ("107", A, None),
                   ("107", E, "answered")],
    "router_down": [("110", R, None), ("111", R, None), ("110", A, None), ("111", E, "cancelled"),
                    ("110", E, "answered")],
    "unknown_caller": [("130", R, None), ("130", A, None), ("130", E, "answered")],
}


def mqtt_cfg(b: Broker, **kw) -> MqttConfig:
    return MqttConfig(host=b.host, port=b.port, topic_prefix=b.prefix, client_id=f"{b.prefix}-pub",
                      reconnect_min=0.05, reconnect_max=0.2, **kw)


async def replay(frames: list[str], hub: PopHub, extra=()) -> RecordCollector:
    """The recording through the daemon's path: fake AMI over TCP, AmiSource, the call log,
    the pop builder (the card from a directory in memory)."""
    seen = RecordCollector()
    builder = PopBuilder(hub, CardSource(PhoneDirectory.from_clients([CLIENT]), None, None, 0.2))
    calllog = CallLog(Tracker("main"), [builder, seen, *extra])
    async with FakeAmi(frames) as ami:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=ami.port, reconnect_min=0.05, reconnect_max=0.2)
        async with asyncio.TaskGroup() as tg:
            building = tg.create_task(builder.run())
            async with AmiSource(cfg) as source:
                async def close_when_served() -> None:
                    while source.stats.frames - source.stats.responses < len(frames):
                        await asyncio.sleep(0.01)
                    await source.aclose()
                tg.create_task(close_when_served())
                await follow(source.events(), calllog)
            calllog.close("capture ended")
            await builder.close()
            await building
    return seen


async def wait_connected(pub: MqttPublisher) -> None:
    async with asyncio.timeout(10):
        while not pub.connected:
            await asyncio.sleep(0.01)


async def wait_sent(pub: MqttPublisher, hub: PopHub) -> None:
    total = sum(hub.stats[e] for e in ("ringing", "answered", "ended"))
    async with asyncio.timeout(10):
        while pub.stats["published"] + pub.stats["dropped"] < total:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
async def test_scenario_publishes_exactly_the_expected_pops(scenario: str) -> None:
    b = broker()
    hub = PopHub()
    pub = MqttPublisher(mqtt_cfg(b), ["main"])
    hub.subscribe(pub)
    async with subscribed(b, "main/agents/#") as got:
        runner = asyncio.create_task(pub.run())
        try:
            await wait_connected(pub)
            await asyncio.wait_for(replay(load_recording(RECORDINGS / f"{scenario}.ami.jsonl"), hub), 30)
            await wait_sent(pub, hub)
            await got.wait_for(pub.stats["published"])
        finally:
            await pub.close()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
    assert pub.stats["dropped"] == 0
    pops = got.pops(b.prefix)
    assert [(ext, ev, p.get("result")) for ext, ev, p in pops] == EXPECTED[scenario]
    call_ids = {p["call_id"] for _, _, p in pops}
    assert len(call_ids) <= 1  # one call per recording: every pop names it
    for ext, ev, p in pops:
        assert p["schema"] == 1 and p["pbx"] == "main" and p["extension"] == ext and p["event"] == ev
        if ev == "ringing":
            if p["caller"]["number"] == "+79161234567":
                assert p["card"]["name"] == "ООО Ромашка" and p["card"]["tier"] == "wholesale"
                assert p["card"]["owner"] == "101" and p["card_status"] == "no-history"
            else:
                assert p["card"] is None and p["card_status"] == "no-client"


async def test_status_is_retained_online_and_offline_after_a_clean_stop() -> None:
    b = broker()
    pub = MqttPublisher(mqtt_cfg(b), ["main"])
    runner = asyncio.create_task(pub.run())
    await wait_connected(pub)
    async with subscribed(b, "main/status") as got:  # subscribed after: the retained value comes
        await got.wait_for(1)
        assert got.messages[0][1:] == (b"online", True)
    await pub.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    async with subscribed(b, "main/status") as got:
        await got.wait_for(1)
        assert got.messages[0][1:] == (b"offline", True)


async def test_broker_down_pops_dropped_and_counted_calls_still_logged() -> None:
    """No broker listening (a closed port): the publisher keeps retrying in the background,
    every pop is dropped at once and counted, and every call is still logged."""
    b = broker()
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    hub = PopHub()
    pub = MqttPublisher(MqttConfig(host="127.0.0.1", port=dead_port, topic_prefix=b.prefix,
                                   reconnect_min=0.05, reconnect_max=0.1), ["main"])
    hub.subscribe(pub)
    runner = asyncio.create_task(pub.run())
    try:
        seen = await asyncio.wait_for(replay(load_recording(RECORDINGS / "burst.ami.jsonl"), hub), 60)
    finally:
        await pub.close(0.1)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(seen.records) == 40 and all(r.complete for r in seen.records)
    pops = sum(hub.stats[e] for e in ("ringing", "answered", "ended"))
    assert pops > 0 and pub.stats["dropped"] == pops and pub.stats["published"] == 0
    assert pub.stats["disconnects"] >= 1 and pub.depth == 0


async def test_daemon_publishes_from_mqtt_config(store_url: str) -> None:
    """The whole daemon with `[mqtt]`: ring group recording on the fake PBX; both ring,
    one answers, the other's pop ends; the ringing pop carries the card with its history
    from the store and why the call came here is empty (no router decision for it)."""
    from webfixture import running_api
    b = broker()
    frames = load_recording(RECORDINGS / "ring_group.ami.jsonl")
    async with subscribed(b, "lab/#") as got:
        async with running_api(store_url, mqtt=mqtt_cfg(b)) as api:
            await wait_connected(api.daemon.mqtt)  # pops before that are dropped, by design
            for raw in frames:
                api.ami.emit(raw)
            await got.wait_for(1 + 5, 20)  # status + 5 pops
            counters = api.daemon.counters()
    pops = [(ext, ev) for ext, ev, _ in got.pops(b.prefix)]
    assert pops == [("106", R), ("107", R), ("106", E), ("107", A), ("107", E)]
    ringing = [p for _, ev, p in got.pops(b.prefix) if ev == R]
    # the seeded client c-ann has this number; its seeded call is in the card's history
    assert ringing[0]["card"]["id"] == "c-ann" and ringing[0]["card_status"] == "ok"
    assert ringing[0]["card"]["recent_calls"][0]["call_id"] == "1700000001.1"
    assert counters["mqtt.published"] >= 5 and counters["screenpop.ringing"] == 2
    assert [p for t, p, _ in got.messages if t == f"{b.prefix}/lab/status"][0] == b"online"


async def test_daemon_routes_and_logs_with_the_broker_down(store_url: str) -> None:
    """`[mqtt]` names a broker that is not there: the daemon starts, answers FastAGI, logs
    the call to the store, and drops (counts) its pops; the publisher keeps retrying."""
    import socket

    from agisim import agi_call, route_request
    from webfixture import running_api
    b = broker()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = MqttConfig(host="127.0.0.1", port=dead_port, topic_prefix=b.prefix, reconnect_min=0.05,
                      reconnect_max=0.1)
    async with running_api(store_url, mqtt=dead) as api:
        routed = await agi_call("127.0.0.1", api.agi_port, route_request("89161234567", linkedid="1795370423.504"))
        assert routed.variables["CLIENT_ID"] == "c-ann" and routed.variables["ROUTE_DIAL"]
        for raw in load_recording(RECORDINGS / "answered_owner.ami.jsonl"):
            api.ami.emit(raw)
        async with asyncio.timeout(20):
            while await api.daemon.store.get_call("lab", "1795370423.504") is None:
                await asyncio.sleep(0.05)
            while api.daemon.counters().get("mqtt.dropped", 0) < 3:
                await asyncio.sleep(0.02)
        counters = api.daemon.counters()
    record = await _stored(store_url, "1795370423.504")
    assert record.outcome == "answered" and record.route is not None and record.route.rule
    assert counters["mqtt.dropped"] == 3 and counters.get("mqtt.published", 0) == 0
    assert counters["mqtt.connected"] == 0 and counters["mqtt.disconnects"] >= 1


async def _stored(url: str, call_id: str):
    from callrouter.store import Store
    async with Store(url) as store:
        return await store.get_call("lab", call_id)
