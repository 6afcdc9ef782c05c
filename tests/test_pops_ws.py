"""Pops on the WebSocket and click-to-call, through the running daemon over real HTTP:
a manager receives only their own extension's pops (never another manager's), staff
receive all; auth, origin and upgrade are checked; a slow client is cut off and counted;
click-to-call sends an Originate from the manager's own device, only to their own client."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from callrouter.screenpop.hub import PopHub
from callrouter.screenpop.model import Pop
from callrouter.web.pops import WS_QUEUE, WsSubscriber
from agisim import agi_call, route_request
from fakeami import load_recording
from popsocket import PopListener
from webfixture import running_api

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"


async def test_each_manager_gets_only_their_own_pops(store_url: str) -> None:
    async with running_api(store_url) as api, aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        ws_url = api.url.replace("http", "ws") + "/api/pops/ws"
        ann = PopListener(await http.ws_connect(ws_url, headers=api.auth("ann")))
        bob = PopListener(await http.ws_connect(ws_url, headers=api.auth("bob")))
        sue = PopListener(await http.ws_connect(ws_url, headers=api.auth("sue")))
        # a browser session: login, then the cookie is the WebSocket's credential
        async with http.post(f"{api.url}/login", json={"token": api.tokens["bob"]}) as r:
            assert r.status == 200
        bob_browser = PopListener(await http.ws_connect(ws_url, origin=api.url))
        async with asyncio.timeout(10):
            while api.daemon.pops.subscribers < 4:
                await asyncio.sleep(0.01)
        # the router is asked first, as the dialplan does: its decision is why the call came
        # to 101, and it starts fetching the card's history before the phone rings
        routed = await agi_call("127.0.0.1", api.agi_port, route_request("89161234567", linkedid="1795370423.504"))
        assert routed.variables["CLIENT_ID"] == "c-ann"
        # 101 answers one call; 102 misses another, which goes on to 120
        for raw in [*load_recording(RECORDINGS / "answered_owner.ami.jsonl"),
                    *load_recording(RECORDINGS / "owner_noanswer_fallback.ami.jsonl")]:
            api.ami.emit(raw)
        await sue.wait_for(8)
        await ann.wait_for(3)
        await bob.wait_for(2)
        await bob_browser.wait_for(2)
        assert ann.seen() == [("101", "ringing"), ("101", "answered"), ("101", "ended")]
        assert bob.seen() == bob_browser.seen() == [("102", "ringing"), ("102", "ended")]
        assert sue.seen() == [*ann.seen(), ("102", "ringing"), ("102", "ended"), ("120", "ringing"),
                              ("120", "answered"), ("120", "ended")]
        ringing = ann.pops[0]
        assert ringing["card"]["id"] == "c-ann" and ringing["card"]["name"] == "Анна Клиентова"
        assert ringing["caller"]["number"] == "+79161234567" and ringing["schema"] == 1
        assert ringing["card_status"] == "ok" and ringing["card"]["recent_calls"][0]["call_id"] == "1700000001.1"
        assert ringing["route"]["reason"] == routed.variables["ROUTE_REASON"] and ringing["route"]["trace"]
        counters = api.daemon.counters()
        assert counters["screenpop.history-prefetched"] == 1  # 101's card; 102's is no client of ours
        async with http.get(f"{api.url}/metrics", headers=api.auth("sue")) as r:
            metrics = await r.text()
        assert 'callrouter_screenpop_pops_total{event="ringing"} 3.0' in metrics
        for w in (ann, bob, sue, bob_browser):
            await w.ws.close()


async def test_refused_handshakes(store_url: str) -> None:
    async with running_api(store_url) as api, aiohttp.ClientSession() as http:
        url = api.url + "/api/pops/ws"
        async with http.get(url) as r:
            assert r.status == 401  # no token
        async with http.get(url, headers=api.auth("ann")) as r:
            assert r.status == 426  # not a WebSocket handshake
        async with http.get(url + "?extension=102", headers=api.auth("ann")) as r:
            assert r.status == 403  # a manager asks for another's pops
        async with http.get(url, headers=api.auth("nix")) as r:
            assert r.status == 403  # a manager without an extension
        try:
            await http.ws_connect(url.replace("http", "ws"), headers=api.auth("ann"), origin="http://evil.example")
            raise AssertionError("a foreign origin was let in")
        except aiohttp.WSServerHandshakeError as e:
            assert e.status == 403
        ws = await http.ws_connect(url.replace("http", "ws") + "?extension=101", headers=api.auth("sue"))
        await api.daemon.web.close()  # the daemon stopping: open sockets are told at once
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001


def test_a_slow_client_is_cut_off_and_counted() -> None:
    hub = PopHub()
    sub = WsSubscriber("101", hub.stats)
    pop = Pop(pbx="lab", extension="101", event="ended", call_id="1.1", device="PJSIP/101", at=None,
              caller=None, result="answered")
    other = pop.model_copy(update={"extension": "102"})
    assert not sub.offer(other)  # not this subscriber's extension: not queued
    for _ in range(WS_QUEUE):
        assert sub.offer(pop)
    assert not sub.offer(pop) and sub.too_slow and hub.stats["ws-slow-closed"] == 1
    assert not sub.offer(pop) and hub.stats["ws-slow-closed"] == 1  # once
    items = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
    assert items[-1] is None  # the sender's signal to close the connection


async def test_click_to_call(store_url: str) -> None:
    async with running_api(store_url) as api, aiohttp.ClientSession() as http:
        url = api.url + "/api/calls/originate"
        async with http.post(url, json={"client_id": "c-ann"}, headers=api.auth("ann")) as r:
            assert r.status == 202, await r.text()
            out = await r.json()
        assert out["channel"] == "PJSIP/101" and out["number"] == "+79161234567" and out["pbx"] == "lab"
        sent = api.ami.originates[-1]
        assert sent["channel"] == "PJSIP/101" and sent["exten"] == "+79161234567"
        assert sent["context"] == "from-internal" and sent["actionid"] == out["action_id"]
        assert sent["async"] == "true" and sent["variable"] == "CALLROUTER_CLIENT_ID=c-ann"
        async with http.post(url, json={"client_id": "c-ann", "phone": "8 916 123-45-67"},
                             headers=api.auth("ann")) as r:
            assert r.status == 202
        async with http.post(url, json={"client_id": "c-ann", "phone": "+74950000000"},
                             headers=api.auth("ann")) as r:
            assert r.status == 400  # not one of the client's phones
        async with http.post(url, json={"client_id": "c-ann"}, headers=api.auth("bob")) as r:
            assert r.status == 404  # not bob's client
        async with http.post(url, json={"client_id": "c-bob"}, headers=api.auth("sue")) as r:
            assert r.status == 403  # staff have no phone of their own here
        assert len(api.ami.originates) == 2
        api.ami.refuse_originate = "Extension does not exist."
        async with http.post(url, json={"client_id": "c-ann"}, headers=api.auth("ann")) as r:
            assert r.status == 502
            assert "Extension does not exist." in (await r.json())["error"]
        api.ami.refuse_originate = None
        await api.ami.stop_listening()
        async with asyncio.timeout(10):
            while api.daemon.snapshot().pbx[0].connected:
                await asyncio.sleep(0.02)
        async with http.post(url, json={"client_id": "c-ann"}, headers=api.auth("ann")) as r:
            assert r.status == 503
            assert "not connected" in (await r.json())["error"]
