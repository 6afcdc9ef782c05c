"""The FastAGI router over real sockets on 127.0.0.1, spoken to the way Asterisk does:
the header blocks recorded from Asterisk 22 (tests/fixtures/asterisk/*.agi.jsonl),
`200 result=1` after every command. Plus every kind of bad input, a slow and a broken
store, and the decision log in the real store."""
import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from agisim import agi_call, parse_set_variable, route_request
from fakeami import FakeAmi
from callrouter.agi.protocol import parse_header, quote, set_variables
from callrouter.agi.server import FastAgiServer
from callrouter.daemon import Daemon
from callrouter.config import AgiConfig, ManagerConfig, PbxConfig, Settings, SpoolConfig, WebConfig
from callrouter.decisionlog.inline import InlineDecisionLog
from callrouter.decisionlog.policy import POLICY
from callrouter.routing.presence import Presence
from callrouter.routing.lookup import PhoneDirectory, StoreLookup
from callrouter.routing.router import Router
from callrouter.routing.rules import RuleSet
from callrouter.store import Client, Store
from callrouter.store.schema import Lead, RouteDecisionRow

FIX = Path(__file__).parent / "fixtures" / "asterisk"
SHIPPED_RULES = Path(__file__).resolve().parents[1] / "rules"
MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
HOST = "127.0.0.1"
CONTRACT = ["ROUTE_DIAL", "ROUTE_TIMEOUT", "ROUTE_FALLBACK", "CLIENT_ID", "CLIENT_NAME", "ROUTE_REASON"]
DEFAULT_DIAL = AgiConfig().default_dial


def lab_rules(d: Path, *, owner_timeout=15, fallback="tier", extra="") -> Path:
    """Rules that reproduce what the lab's router stub answered in the recordings."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "lab.yaml").write_text(f"""
owner_dial: "Local/{{extension}}@phones"
tiers:
  - {{name: retail, min_turnover: 0, dial: Local/retail@queues, timeout: 40}}
  - {{name: wholesale, min_turnover: 50000, dial: Local/wholesale@queues, timeout: 40}}
rules:
{extra}
  - {{name: unknown-caller, when: {{client: unknown}}, dial: Local/130@phones, timeout: 15, reason: unknown-caller}}
  - {{name: owner, to: owner, timeout: {owner_timeout}, fallback: '{fallback}'}}
  - {{name: tier, to: tier}}
""", encoding="utf-8")
    return d


def ivan(owner):
    return [Client(id="c-1001", name="Ivan Petrov", owner_extension=owner, monthly_turnover=120_000,
                   phones=("+79161234567",))]


SCENARIOS = {
    "answered_owner": (ivan("101"), {}),
    "caller_hangs_up": (ivan("101"), {}),
    "caller_abandons": (ivan("101"), {}),
    "blind_transfer": (ivan("101"), {}),
    "queue_answered": ([Client(id="c-2002", name="Shop", monthly_turnover=10_000, phones=("+79035550011",))], {}),
    "queue_abandon": ([Client(id="c-2002", name="Shop", monthly_turnover=60_000, phones=("+79035550011",))], {}),
    "unknown_caller": ([], {}),
    "anonymous": ([], {}),
    "owner_busy_fallback": (ivan("103"), {"owner_timeout": 10, "fallback": "Local/121@phones"}),
    "owner_noanswer_fallback": (ivan("102"), {"owner_timeout": 4, "fallback": "Local/120@phones"}),
    "owner_offline_fallback": (ivan("108"), {"owner_timeout": 10, "fallback": "Local/120@phones"}),
    "ring_group": ([], {"extra": "  - {name: group, when: {caller_in: ['+79161234567']}, "
                                 "dial: 'Local/106@phones&Local/107@phones', timeout: 15}"}),
    "burst": ([Client(id=f"c-{n}", name=f"Client {n}", owner_extension=str(140 + n % 20),
                      phones=(f"+7916{n:07d}",)) for n in range(40)], {"owner_timeout": 10}),
}


@asynccontextmanager
async def serving(router, *, deadline_ms=200.0, set_variables="array", **kw):
    srv = FastAgiServer(router, AgiConfig(deadline_ms=deadline_ms, set_variables=set_variables), host=HOST, port=0,
                        clock=kw.pop("clock", lambda: MONDAY_10), **kw)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def recorded(name):
    return [json.loads(line) for line in (FIX / f"{name}.agi.jsonl").read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ recordings

@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_recorded_requests_get_the_recorded_variables(scenario, store, tmp_path):
    clients, rule_kw = SCENARIOS[scenario]
    if clients:
        await store.upsert_clients(clients)
    directory = PhoneDirectory(store)
    await directory.load()
    router = Router(RuleSet(lab_rules(tmp_path / "rules", **rule_kw)), directory, Presence())
    recorder = InlineDecisionLog(store)
    writing = asyncio.create_task(recorder.run())
    requests = recorded(scenario)
    async with serving(router, recorder=recorder) as srv:
        # all at once, as in the burst recording (40 concurrent calls)
        results = await asyncio.gather(*(agi_call(HOST, srv.port, r["request"].encode()) for r in requests))
    await recorder.close()
    await asyncio.wait_for(writing, 5)  # close() ends run()

    for rec, res in zip(requests, results):
        assert res.closed_by_server
        assert list(res.variables) == CONTRACT  # every variable, in contract order, each acknowledged
        for cmd, reply in rec["commands"]:
            assert reply.strip() == "200 result=1"
            [(name, value)] = parse_set_variable(cmd)
            assert res.variables[name] == value, (scenario, name)

    rows = (await _rows(store, RouteDecisionRow))
    assert len(rows) == len(requests)
    uniqueids = {parse_header([x for x in r["request"].splitlines() if x]).uniqueid for r in requests}
    assert {row.linkedid for row in rows} == uniqueids  # no agi_arg_1 in the lab: agi_uniqueid
    assert all(row.pbx == "main" and row.latency_ms is not None and row.latency_ms >= 0 for row in rows)
    assert all(row.trace["outcome"] == "answered" and row.trace["steps"] for row in rows)
    leads = await _rows(store, Lead)
    if scenario == "unknown_caller":
        assert [(lead.phone, lead.raw) for lead in leads] == [("+74951112233", "74951112233")]
        assert rows[0].reason == "unknown-caller" and rows[0].caller_number == "+74951112233"
    else:
        assert leads == [] or scenario == "ring_group"


async def _rows(store, table):
    async with store.engine.connect() as conn:
        return (await conn.execute(select(table.__table__))).all()


async def test_linkedid_comes_from_agi_arg_1(store):
    await store.upsert_clients(ivan("101"))
    directory = PhoneDirectory(store)
    await directory.load()
    recorder = InlineDecisionLog(store)
    writing = asyncio.create_task(recorder.run())
    router = Router(RuleSet(SHIPPED_RULES), directory, Presence())
    async with serving(router, recorder=recorder) as srv:
        res = await agi_call(HOST, srv.port, route_request("89161234567", linkedid="1795370423.504",
                                                           uniqueid="1795370423.505"))
        bad = await agi_call(HOST, srv.port, route_request("89161234567", linkedid="x y;z",
                                                           uniqueid="1795370423.777"))
    await recorder.close()
    await asyncio.wait_for(writing, 5)  # close() ends run()
    assert res.variables["ROUTE_DIAL"] == "PJSIP/101" and res.variables["CLIENT_NAME"] == "Ivan Petrov"
    assert bad.variables["ROUTE_REASON"] == "owner"
    rows = await _rows(store, RouteDecisionRow)
    assert sorted(r.linkedid for r in rows) == ["1795370423.504", "1795370423.777"]
    row = next(r for r in rows if r.linkedid == "1795370423.504")
    assert (row.rule, row.reason, row.dial, row.timeout, row.fallback, row.client_id, row.caller_raw) == (
        "owner", "owner", "PJSIP/101", 15, "Local/wholesale@queues", "c-1001", "89161234567")


# ------------------------------------------------------------------ presence and DND through the server

async def test_owner_busy_goes_to_tier_over_the_wire(store):
    await store.upsert_clients(ivan("101"))
    directory = PhoneDirectory(store)
    await directory.load()
    presence = Presence()
    router = Router(RuleSet(SHIPPED_RULES), directory, presence)
    async with serving(router) as srv:
        from callrouter.ami.events import Channel, Hangup, Newstate
        ch = Channel("PJSIP/101-00000042", "9.1", "9.1", "Up")
        presence.apply(Newstate(None, ch))
        res = await agi_call(HOST, srv.port, route_request("+79161234567"))
        assert res.variables["ROUTE_REASON"] == "owner-unavailable→tier:wholesale"
        assert res.variables["ROUTE_DIAL"] == "Local/wholesale@queues"
        presence.apply(Hangup(None, ch, 16))
        res = await agi_call(HOST, srv.port, route_request("+79161234567"))
        assert res.variables["ROUTE_REASON"] == "owner"


# ------------------------------------------------------------------ bad input

async def _open(port):
    return await asyncio.open_connection(HOST, port)


async def _eof_within(reader, seconds=5.0) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    async with asyncio.timeout(seconds):
        while True:
            try:
                chunk = await reader.read(4096)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def _plain_router():
    directory = PhoneDirectory.from_clients(ivan("101"))  # bad input never reaches a store
    return Router(RuleSet(SHIPPED_RULES), directory, Presence())


@pytest.fixture
async def plain_server():
    async with serving(_plain_router(), deadline_ms=150, reply_timeout=0.5) as srv:
        yield srv


@pytest.fixture
async def each_server():
    """Sets one variable per SET VARIABLE command (agi.set_variables = "each")."""
    async with serving(_plain_router(), deadline_ms=150, reply_timeout=0.5, set_variables="each") as srv:
        yield srv


async def _good(port):
    res = await agi_call(HOST, port, route_request("+79161234567"))
    assert res.variables["ROUTE_DIAL"] == "PJSIP/101"
    return res


async def test_unparseable_request_gets_the_default_route(plain_server):
    res = await agi_call(HOST, plain_server.port, b"hello there\nthis is not agi\n\n")
    assert res.variables["ROUTE_DIAL"] == DEFAULT_DIAL
    assert res.variables["ROUTE_REASON"] == "default:bad-request"
    res = await agi_call(HOST, plain_server.port, b"agi_callerid: 79161234567\n\n")  # no script at all
    assert res.variables["ROUTE_REASON"] == "default:bad-request"
    assert plain_server.stats["bad-unparseable"] == 2
    await _good(plain_server.port)


async def test_a_stalled_header_is_dropped_and_others_are_served(plain_server):
    stalled = []
    for _ in range(5):
        r, w = await _open(plain_server.port)
        w.write(b"agi_network: yes\nagi_network_script: route\n")  # ...and nothing more
        stalled.append((r, w))
    nothing = await _open(plain_server.port)  # connects and says nothing at all
    await asyncio.gather(*(_good(plain_server.port) for _ in range(20)))
    for r, w in [*stalled, nothing]:
        assert await _eof_within(r) == b""  # dropped at its deadline, never answered
        w.close()
    assert plain_server.stats["dropped-stalled"] == 6
    assert plain_server.stats["answered"] == 20


async def test_a_connection_closed_before_the_blank_line(plain_server):
    r, w = await _open(plain_server.port)
    w.write(b"agi_network: yes\nagi_network_script: route\nagi_callerid: 7916")
    w.write_eof()
    assert await _eof_within(r) == b""
    w.close()
    r, w = await _open(plain_server.port)
    w.close()
    await _good(plain_server.port)
    for _ in range(50):
        if plain_server.stats["bad-incomplete"] == 2:
            break
        await asyncio.sleep(0.01)
    assert plain_server.stats["bad-incomplete"] == 2


@pytest.mark.parametrize("payload", [
    b"agi_network_script: route\n" + b"".join(b"agi_x%d: %s\n" % (i, b"a" * 100) for i in range(200)),
    b"agi_network_script: route\nagi_callerid: " + b"9" * 20_000 + b"\n\n",
    b"\0" * 100_000,
])
async def test_an_oversized_header_is_dropped(plain_server, payload):
    r, w = await _open(plain_server.port)
    try:
        w.write(payload)
        await w.drain()
    except ConnectionError:
        pass
    assert await _eof_within(r) == b""
    w.close()
    assert plain_server.stats["bad-oversized"] == 1
    await _good(plain_server.port)


async def test_an_unknown_script_is_closed_without_variables(plain_server):
    res = await agi_call(HOST, plain_server.port, route_request("+79161234567", script="billing"))
    assert res.closed_by_server and res.commands == []
    res = await agi_call(HOST, plain_server.port, route_request("+79161234567", script="route?x=1"))
    assert res.variables["ROUTE_DIAL"] == "PJSIP/101"  # a query string is not another script
    assert plain_server.stats["unknown-script"] == 1


async def test_a_peer_that_never_replies_is_cut_and_others_are_served(plain_server):
    r, w = await _open(plain_server.port)
    w.write(route_request("+79161234567"))
    first = await r.readline()
    assert first.startswith(b"SET VARIABLE ARRAY(ROUTE_DIAL,")  # answered in time ...
    await _good(plain_server.port)
    assert await _eof_within(r) == b""                   # ... then cut after reply_timeout
    w.close()
    assert plain_server.stats["reply-timeout"] == 1


async def test_hangup_during_the_answer_stops_it(each_server):
    plain_server = each_server
    r, w = await _open(plain_server.port)
    w.write(route_request("+79161234567"))
    assert (await r.readline()).startswith(b"SET VARIABLE ROUTE_DIAL")
    w.write(b"200 result=1\n")
    assert (await r.readline()).startswith(b"SET VARIABLE ROUTE_TIMEOUT")
    w.write(b"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n")
    assert await _eof_within(r) == b""  # no further commands to a dead channel
    w.close()
    assert plain_server.stats["hangup"] == 1


async def test_error_replies_do_not_stop_the_answer(each_server):
    plain_server = each_server
    r, w = await _open(plain_server.port)
    w.write(route_request("+79161234567"))
    seen = []
    replies = [b"520-Invalid command syntax.  Proper usage follows:\nUsage: SET VARIABLE\n520 End of proper usage.\n",
               b"510 Invalid or unknown command\n"] + [b"200 result=1\n"] * 4
    for reply in replies:
        seen.append(await r.readline())
        w.write(reply)
    assert await _eof_within(r) == b""
    w.close()
    assert [parse_set_variable(x.decode())[0][0] for x in seen] == CONTRACT
    assert plain_server.stats["answered"] == 1


async def test_all_variables_go_in_one_command_by_default(plain_server):
    array = "SET VARIABLE ARRAY(" + ",".join(CONTRACT) + ") "
    first = await _good(plain_server.port)
    # SET VARIABLE answers 200 even without ARRAY(): the first call checks that it worked
    assert [c[:len(array)] for c in first.commands] == [array, "GET VARIABLE ROUTE_DIAL\n"]
    again = await _good(plain_server.port)
    assert len(again.commands) == 1 and again.commands[0].startswith(array)
    for res in (first, again):
        assert list(res.variables) == CONTRACT
        assert res.variables["ROUTE_REASON"] == "owner" and res.variables["CLIENT_NAME"] == "Ivan Petrov"
    assert plain_server.stats["array-checked"] == 1 and plain_server.stats["answered"] == 2


async def test_the_answer_ends_with_the_fin_sent_in_the_same_callback(plain_server, monkeypatch):
    """Once Asterisk has replied to the last command the router's FIN is sent before the
    event loop runs anything else (write_eof), not on a later loop turn, which a busy loop
    (an AMI burst) makes milliseconds long: the caller's side sees EOF right after the
    callback that handled the reply."""
    import socket
    from callrouter.agi import server as server_mod

    await _good(plain_server.port)  # ARRAY() checked: the next call gets one command
    loop = asyncio.get_running_loop()
    client = socket.create_connection((HOST, plain_server.port))
    client.setblocking(False)
    seen: list = []
    orig = server_mod._Connection._finish

    def finish(self, outcome, close=True):
        orig(self, outcome, close)
        try:  # still inside the server's callback: has the FIN reached the client?
            seen.append(client.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK))
        except BlockingIOError:
            seen.append("nothing yet")
    monkeypatch.setattr(server_mod._Connection, "_finish", finish)
    try:
        async with asyncio.timeout(5):
            await loop.sock_sendall(client, route_request("+79161234567"))
            data = b""
            while not data.endswith(b"\n"):
                data += await loop.sock_recv(client, 4096)
            assert data.startswith(b"SET VARIABLE ARRAY(")
            await loop.sock_sendall(client, b"200 result=1\n")
            while not seen:
                await asyncio.sleep(0.01)
    finally:
        client.close()
    assert seen == [b""]  # EOF
    assert plain_server.stats["answered"] == 2


async def test_a_pbx_without_the_array_function_gets_the_variables_one_by_one(plain_server):
    first = await agi_call(HOST, plain_server.port, route_request("+79161234567"), array_function=False)
    assert first.commands[0].startswith("SET VARIABLE ARRAY(") and first.commands[1] == "GET VARIABLE ROUTE_DIAL\n"
    assert [parse_set_variable(c)[0][0] for c in first.commands[2:]] == CONTRACT  # on the same call
    assert first.variables["ROUTE_DIAL"] == "PJSIP/101" and list(first.variables) == CONTRACT
    later = await agi_call(HOST, plain_server.port, route_request("+79161234567"), array_function=False)
    assert [parse_set_variable(c)[0][0] for c in later.commands] == CONTRACT  # this PBX: one by one from now on
    assert later.variables["CLIENT_NAME"] == "Ivan Petrov"
    assert plain_server.stats["array-unsupported"] == 1 and plain_server.stats["answered"] == 2


async def test_a_refused_array_command_is_answered_variable_by_variable(plain_server):
    r, w = await _open(plain_server.port)
    w.write(route_request("+79161234567"))
    assert (await r.readline()).startswith(b"SET VARIABLE ARRAY(")
    w.write(b"520 Invalid command syntax.\n")  # not what Asterisk says to a well-formed one; handled anyway
    seen = []
    for _ in CONTRACT:
        seen.append((await r.readline()).decode())
        w.write(b"200 result=1\n")
    assert await _eof_within(r) == b""
    w.close()
    got = dict(kv for line in seen for kv in parse_set_variable(line))
    assert list(got) == CONTRACT and got["ROUTE_DIAL"] == "PJSIP/101"
    assert plain_server.stats["array-refused"] == 1 and plain_server.stats["answered"] == 1


async def test_hangup_in_reply_to_the_array_command_ends_the_answer(plain_server):
    r, w = await _open(plain_server.port)
    w.write(route_request("+79161234567"))
    assert (await r.readline()).startswith(b"SET VARIABLE ARRAY(")
    w.write(b"HANGUP\n200 result=1\n")
    assert await _eof_within(r) == b""
    w.close()
    assert plain_server.stats["hangup"] == 1


# ------------------------------------------------------------------ slow or broken store

class SlowStore(Store):
    """The real store, behind a database that takes `delay` s to answer a lookup."""

    delay = 1.0

    async def clients_by_phone(self, e164):
        await asyncio.sleep(self.delay)
        return await super().clients_by_phone(e164)


async def test_a_slow_store_gets_the_default_route_within_the_deadline(store, store_url):
    await store.upsert_clients(ivan("101"))
    async with SlowStore(store_url) as slow:
        router = Router(RuleSet(SHIPPED_RULES), StoreLookup(slow), Presence())
        recorder = InlineDecisionLog(store)
        writing = asyncio.create_task(recorder.run())
        async with serving(router, deadline_ms=100, recorder=recorder) as srv:
            results = await asyncio.gather(*(agi_call(HOST, srv.port, route_request("+79161234567", uniqueid=f"9.{n}"),
                                                      timeout=0.9) for n in range(10)))
            assert srv.stats["default-timeout"] == 10
        await recorder.close()
        await asyncio.wait_for(writing, 5)  # close() ends run()
    for res in results:  # each answered before the store could have (1 s)
        assert res.variables["ROUTE_DIAL"] == DEFAULT_DIAL
        assert res.variables["ROUTE_REASON"] == "default:timeout"
        assert res.variables["ROUTE_TIMEOUT"] == str(AgiConfig().default_timeout)
    rows = await _rows(store, RouteDecisionRow)
    assert len(rows) == 10 and all(r.reason == "default:timeout" and r.rule is None for r in rows)
    assert rows[0].caller_number == "+79161234567"


async def test_a_broken_store_gets_the_default_route(store):
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE client_phones")
    router = Router(RuleSet(SHIPPED_RULES), StoreLookup(store), Presence())
    async with serving(router) as srv:
        res = await agi_call(HOST, srv.port, route_request("+79161234567"))
        assert res.variables["ROUTE_REASON"] == "default:error"
        assert res.variables["ROUTE_DIAL"] == DEFAULT_DIAL
        assert srv.stats["default-error"] == 1


async def test_a_full_decision_log_never_delays_answers(store):
    await store.upsert_clients(ivan("101"))
    directory = PhoneDirectory(store)
    await directory.load()
    recorder = InlineDecisionLog(store, maxsize=2)  # writer not started: nothing drains
    router = Router(RuleSet(SHIPPED_RULES), directory, Presence())
    async with serving(router, recorder=recorder) as srv:
        for _ in range(5):
            await _good(srv.port)
    assert recorder.stats["dropped"] == 3 and recorder.pending == 2


# ------------------------------------------------------------------ the whole service

async def test_the_daemon_routes_records_decisions_and_sets_dnd(store, store_url, tmp_path):
    """The Daemon as `callrouter run` builds it (its FastAGI server, directory, presence,
    decision-log process, one fake PBX on AMI): routes by owner, honours DND set through
    it, records every decision and the unknown caller's lead, and stops cleanly."""
    settings = Settings(database_url=store_url, rules_dir=str(SHIPPED_RULES),
                        agi=AgiConfig(host=HOST, port=0), web=WebConfig(port=0),
                        spool=SpoolConfig(path=str(tmp_path / "spool.db")),
                        managers=(ManagerConfig(extension="101", devices=("PJSIP/101", "PJSIP/101-app")),))
    await store.upsert_clients(ivan("101"))
    async with FakeAmi([]) as ami:
        settings = settings.model_copy(update={"pbx": (PbxConfig(name="office", host=HOST, port=ami.port),)})
        daemon = Daemon(settings, clock=lambda: MONDAY_10, wait_for_directory=True)
        stop = asyncio.Event()
        running = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.started.wait(), 20)
            assert daemon.directory.ready
            port = daemon.agi.port
            res = await agi_call(HOST, port, route_request("89161234567", linkedid="42.1"))
            assert res.variables["ROUTE_DIAL"] == "PJSIP/101&PJSIP/101-app"
            await daemon.set_dnd("101", True)
            res = await agi_call(HOST, port, route_request("89161234567", linkedid="42.2"))
            assert res.variables["ROUTE_REASON"] == "owner-unavailable→tier:wholesale"
            res = await agi_call(HOST, port, route_request("74950000001", linkedid="42.3"))
            assert res.variables["ROUTE_REASON"] == "unknown-caller"
            snap = daemon.snapshot()
            assert [p.name for p in snap.pbx] == ["office"] and snap.pbx[0].live_calls == ()
            assert daemon.counters()["agi.answered"] == 3
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
    assert daemon.counters()["decision_log.decisions"] == 3
    rows = await _rows(store, RouteDecisionRow)
    assert sorted((r.pbx, r.linkedid, r.reason) for r in rows) == [
        ("office", "42.1", "owner"), ("office", "42.2", "owner-unavailable→tier:wholesale"),
        ("office", "42.3", "unknown-caller")]
    assert [(x.pbx, x.phone, x.call_id) for x in await _rows(store, Lead)] == [("office", "+74950000001", "42.3")]
    assert await store.dnd_extensions() == {"101"}


def test_quote_never_lets_a_value_end_the_command():
    assert quote('a"b\\c\nSET VARIABLE X 1') == '"a\\"b\\\\cSET VARIABLE X 1"'
    assert parse_set_variable("SET VARIABLE CLIENT_NAME " + quote('Ivan "the" \\ one') + "\n") == [
        ("CLIENT_NAME", 'Ivan "the" \\ one')]


def test_one_command_sets_every_value_literally_as_asterisk_splits_it():
    nasty = [("ROUTE_DIAL", "PJSIP/101&Local/x@y,tT"), ("ROUTE_TIMEOUT", "15"), ("ROUTE_FALLBACK", ""),
             ("CLIENT_ID", 'c-"1",(2)[3]'), ("CLIENT_NAME", "Ивáн \\ Петров, ООО (\"Ромашка\")"),
             ("ROUTE_REASON", "owner-unavailable→tier:retail\\")]
    [line] = set_variables(nasty)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_set_variable(line.decode()) == nasty
    assert parse_set_variable(set_variables([("A", "x\ny"), ("B", "")])[0].decode()) == [("A", "xy"), ("B", "")]
    long = [("CLIENT_NAME", "x" * 3000), ("ROUTE_DIAL", "PJSIP/1")]  # past Asterisk's command buffer
    lines = set_variables(long)
    assert all(len(line) <= 2000 for line in lines)  # each fits res_agi's 2048-byte buffer
    got = [parse_set_variable(c.decode())[0] for c in lines]
    assert got[1] == ("ROUTE_DIAL", "PJSIP/1") and got[0][0] == "CLIENT_NAME"
    assert 1900 < len(got[0][1]) < 2000 and set(got[0][1]) == {"x"}  # cut, not split into two commands
    assert [parse_set_variable(c.decode()) for c in set_variables(nasty, one_command=False)] == [[kv] for kv in nasty]


class BatchRecordingStore(Store):
    """The real store, noting the size of each batch the decision log writes (decisions,
    and the leads they created, in one transaction)."""

    batches: list

    async def save_routing_batch(self, calls):
        self.batches.append(("decisions", len(calls)))
        self.batches.append(("leads", sum(1 for c in calls if c.lead() is not None)))
        return await super().save_routing_batch(calls)


async def test_decisions_are_stored_in_batches(store, store_url):
    async with BatchRecordingStore(store_url) as batching:
        batching.batches = []
        await batching.upsert_clients(ivan("101"))
        recorder = InlineDecisionLog(batching, policy=replace(POLICY, linger=0.05))
        writing = asyncio.create_task(recorder.run())
        router = Router(RuleSet(SHIPPED_RULES), PhoneDirectory.from_clients(ivan("101")), Presence())
        async with serving(router, recorder=recorder) as srv:
            calls = [route_request("+79161234567", linkedid=f"7.{i}") for i in range(10)]
            calls += [route_request(f"+7495000000{i}", linkedid=f"8.{i}") for i in range(5)]
            await asyncio.gather(*(agi_call(HOST, srv.port, c) for c in calls))
        await recorder.close()
        await asyncio.wait_for(writing, 5)  # close() ends run()
        assert recorder.stats["decisions"] == 15 and recorder.stats["leads"] == 5
        assert sum(n for kind, n in batching.batches if kind == "decisions") == 15
        assert any(n > 1 for kind, n in batching.batches if kind == "decisions")
    rows = await _rows(store, RouteDecisionRow)
    assert sorted(r.linkedid for r in rows) == sorted([f"7.{i}" for i in range(10)] + [f"8.{i}" for i in range(5)])
    assert len(await _rows(store, Lead)) == 5


def test_the_protocol_imports_alone():
    """`callrouter.agi` imports nothing eagerly: the wire format loads without the server,
    routing, the store or the decision log (callrouter.text, pure, makes values storable)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, callrouter.agi.protocol; "
                          "print(' '.join(sorted(m for m in sys.modules if m.startswith('callrouter'))))"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["callrouter", "callrouter.agi", "callrouter.agi.protocol", "callrouter.text"]  # text: pure, stdlib
