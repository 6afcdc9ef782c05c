"""Screen-pops in the browser and click-to-call.

- `GET /api/pops/ws`: a WebSocket of pops (the same JSON as on MQTT). A manager gets only
  the pops of their own extension; staff get every pop, or one extension's (`?extension=`).
  Auth as anywhere else (session cookie or Bearer token); a browser's handshake from
  another origin is refused (the cookie is SameSite=Strict too). Each connection has a
  bounded queue: a client that falls behind is closed (code 1013; the page reconnects)
  and counted (`screenpop.ws-slow-closed`), never waited for.
- `POST /api/calls/originate`: the manager's own device rings; answered, it dials the
  client (AMI Originate, asynchronous). Only a client the manager owns (another's is 404).
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from callrouter.ami.client import AmiError
from callrouter.phone import normalize
from callrouter.screenpop.model import Pop

from .app import ApiError, Ctx, Route, not_found, read_body, read_query
from .popmodels import OriginateIn, OriginateOut, PopsQuery

log = logging.getLogger(__name__)

WS_QUEUE = 100          # pops waiting per connection; beyond it the client is too slow
SEND_TIMEOUT = 5.0      # s for one frame to leave
HEARTBEAT = 30.0        # s between pings (a dead browser is noticed)
ORIGINATE_TIMEOUT = 5.0  # s for the PBX to accept the Originate


class WsSubscriber:
    """A hub subscriber for one WebSocket: its filter and its bounded queue."""

    def __init__(self, extension: str | None, stats, ws: web.WebSocketResponse | None = None):
        self.extension = extension
        self.ws = ws
        self.queue: asyncio.Queue[Pop | None] = asyncio.Queue(WS_QUEUE)
        self.too_slow = False
        self._stats = stats

    def offer(self, pop: Pop) -> bool:
        if self.too_slow or (self.extension is not None and pop.extension != self.extension):
            return False
        try:
            self.queue.put_nowait(pop)
            return True
        except asyncio.QueueFull:
            self.too_slow = True
            self._stats["ws-slow-closed"] += 1
            self.queue.get_nowait()
            self.queue.put_nowait(None)  # wakes the sender, which closes the connection
            return False


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (a browser always sends Origin on a WebSocket handshake)
    return urlsplit(origin).netloc == request.host


async def pops_ws(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    q: PopsQuery = read_query(request, PopsQuery)
    own = ctx.own_extension
    if own is not None and q.extension is not None and q.extension != own:
        raise ApiError(403, "a manager receives only their own pops", field="extension")
    if not _same_origin(request):
        raise ApiError(403, "WebSocket from another origin")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=4096)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this is a WebSocket: send the Upgrade handshake", headers={"Upgrade": "websocket"})
    await ws.prepare(request)
    hub = ctx.daemon.pops
    sub = WsSubscriber(own or q.extension, hub.stats, ws)
    hub.subscribe(sub)
    hub.stats["ws-opened"] += 1

    async def send() -> None:
        while True:
            pop = await sub.queue.get()
            if pop is None:
                await ws.close(code=1013, message=b"too slow: reconnect")
                return
            await asyncio.wait_for(ws.send_str(pop.model_dump_json(by_alias=True)), SEND_TIMEOUT)

    sender = asyncio.create_task(send())
    try:
        async for msg in ws:  # the page sends nothing we act on; this notices the close
            if msg.type == WSMsgType.ERROR:
                break
            if sender.done():
                break
    except (TimeoutError, ConnectionError):
        pass
    finally:
        hub.unsubscribe(sub)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if not ws.closed:
            await ws.close()
    return ws


async def close_sockets(hub) -> None:
    """The daemon stops: every pop WebSocket is closed now (1001 going away; the page
    reconnects to the next daemon), so the web server's shutdown does not wait for them."""
    subs = [s for s in hub.sinks() if isinstance(s, WsSubscriber) and s.ws is not None]
    await asyncio.gather(*(s.ws.close(code=1001, message=b"server stopping") for s in subs),
                         return_exceptions=True)


_CID_UNSAFE = re.compile(r'[\x00-\x1f\x7f"<>\\]')


def _display(name: str) -> str:
    """The client's name as caller ID on the manager's phone: one AMI header value, no quotes."""
    return " ".join(_CID_UNSAFE.sub(" ", name).split())[:32]


async def originate(request: web.Request, ctx: Ctx) -> web.Response:
    body: OriginateIn = await read_body(request, OriginateIn)
    own = ctx.own_extension
    assert own is not None  # managers only
    client = (await ctx.store.get_clients([body.client_id])).get(body.client_id)
    if client is None or client.owner_extension != own:
        raise not_found(f"client {body.client_id!r}")  # another manager's client does not exist for you
    if body.phone is not None:
        number = normalize(body.phone, ctx.region)
        if number is None or number not in client.phones:
            raise ApiError(400, "phone: not one of the client's phones", field="phone")
    elif client.phones:
        number = client.phones[0]
    else:
        raise ApiError(409, f"client {client.id!r} has no phone")
    managers = await ctx.store.list_managers([own])
    devices = managers[0].devices if managers else ()
    if not devices:
        raise ApiError(409, f"manager {own} has no device configured to call from")
    daemon = ctx.daemon
    if not daemon.pbxs:
        raise ApiError(503, "no PBX configured")
    pbx, link = next(iter(daemon.pbxs.items()))
    if not link.source.connected:
        raise ApiError(503, f"PBX {pbx} is not connected: try again shortly")
    cfg = daemon.settings.screenpop
    action_id = f"callrouter-c2c-{secrets.token_hex(8)}"
    action = {"Action": "Originate", "ActionID": action_id, "Channel": devices[0], "Exten": number,
              "Context": cfg.originate_context, "Priority": "1", "Async": "true",
              "Timeout": str(cfg.originate_timeout * 1000),
              "CallerID": f'"{_display(client.name)}" <{number}>',
              # not CLIENT_ID: the tracker takes a call carrying the router's variables for inbound
              "Variable": f"CALLROUTER_CLIENT_ID={client.id}"}
    try:
        answer = await link.source.action(action, timeout=ORIGINATE_TIMEOUT, as_list=False)
    except AmiError as e:
        raise ApiError(503, f"PBX {pbx}: {e}") from None
    reply = answer[0] if isinstance(answer, list) and answer else answer
    if str(getattr(reply, "get", lambda k, d=None: d)("Response", "")).lower() == "error":
        raise ApiError(502, f"PBX {pbx} refused the Originate: {reply.get('Message', '')}")
    log.info("click-to-call: %s (%s) -> client %s, action %s", own, devices[0], client.id, action_id)
    out = OriginateOut(action_id=action_id, pbx=pbx, channel=devices[0], number=number)
    return web.json_response(out.model_dump(mode="json"), status=202)


ROUTES = [
    Route("GET", "/api/pops/ws", pops_ws, "WebSocket of screen-pops (the MQTT payloads): a manager's own, "
          "or all for staff", query=PopsQuery, status=101, errors=(403, 426), tag="screen-pop"),
    Route("POST", "/api/calls/originate", originate, "Click-to-call: ring the manager's phone, then dial "
          "their client", roles=("manager",), body=OriginateIn, response=OriginateOut, status=202,
          errors=(404, 409, 502, 503), tag="screen-pop"),
]


class ScreenPopCollector:
    """Prometheus: pops published by kind, what was dropped where, the broker link."""

    def __init__(self, daemon):
        self._daemon = daemon

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self._daemon.counters()
        pops = CounterMetricFamily("callrouter_screenpop_pops", "Screen-pops built, by event", labels=["event"])
        for event in ("ringing", "answered", "ended"):
            pops.add_metric([event], c.get(f"screenpop.{event}", 0))
        dropped = CounterMetricFamily("callrouter_screenpop_dropped", "Screen-pops not delivered, by where",
                                      labels=["where"])
        dropped.add_metric(["mqtt"], c.get("mqtt.dropped", 0))
        dropped.add_metric(["websocket"], c.get("screenpop.ws-slow-closed", 0))
        yield pops
        yield dropped
        if "mqtt.connected" in c:
            up = GaugeMetricFamily("callrouter_mqtt_connected", "1 when the MQTT broker link is up")
            up.add_metric([], c["mqtt.connected"])
            yield up
