"""Callbacks: a missed or abandoned inbound call from a known client opens one for its
owner (or the desk queue); the next answered call with the client, either way, closes it;
a replayed record opens nothing twice; the API is role-scoped and CSRF-checked."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from callrouter.records import CallRecord, Party
from callrouter.screenpop.callbacks import CloseBy, NewCallback, callback_action
from callrouter.screenpop.keeper import CallbackKeeper
from callrouter.store import Client, Store, upgrade
from callrouter.tracker import CallFinished
from fakeami import load_recording
from webfixture import running_api

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)


def rec(outcome: str, direction: str = "in", call_id: str = "1.1") -> CallRecord:
    return CallRecord(pbx="lab", call_id=call_id, direction=direction, caller=Party(number="+79161234567"),
                      callee=Party(raw="5550100"), outcome=outcome, started_at=T0, ended_at=T0,
                      ring_seconds=1.0, talk_seconds=0.0, duration_seconds=1.0)


def test_what_opens_and_what_closes() -> None:
    assert callback_action(rec("missed"), "c-1", "101", "desk") == NewCallback(
        "lab", "1.1", "c-1", "101", "owner", "missed", "+79161234567", T0)
    assert callback_action(rec("abandoned"), "c-1", None, "desk").assignee == "desk"
    assert callback_action(rec("abandoned"), "c-1", None, "desk").assignee_kind == "queue"
    assert callback_action(rec("answered", "out"), "c-1", "101", "desk") == CloseBy("c-1", "1.1", T0)
    assert callback_action(rec("answered"), "c-1", "101", "desk") == CloseBy("c-1", "1.1", T0)
    assert callback_action(rec("missed"), None, None, "desk") is None          # unknown caller
    assert callback_action(rec("no-answer", "out"), "c-1", "101", "desk") is None
    assert callback_action(rec("missed", "internal"), "c-1", "101", "desk") is None
    assert callback_action(rec("busy"), "c-1", "101", "desk") is None


async def _wait(cond, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_opened_by_missed_calls_closed_by_the_next_answered_one(store_url: str) -> None:
    await upgrade(store_url)
    async with Store(store_url) as store:  # a client without an owner: the desk's callback
        await store.upsert_clients([Client(id="c-desk", name="Desk Client", phones=("+79035550011",))])
    # abandoned by c-ann's number (owner 101), abandoned in a queue by c-desk, then 101
    # calls c-ann's number back (outbound, answered): closes the first
    frames = [*load_recording(RECORDINGS / "caller_abandons.ami.jsonl"),
              *load_recording(RECORDINGS / "queue_abandon.ami.jsonl"),
              *load_recording(RECORDINGS / "outbound_click_to_call.ami.jsonl")]
    async with running_api(store_url, frames) as api:
        keeper = next(r for r in api.daemon.reporters if isinstance(r, CallbackKeeper))
        await _wait(lambda: keeper.stats["opened"] == 2 and keeper.stats["closed"] == 1)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async def get(user: str, query: str = "status=all") -> list[dict]:
                async with http.get(f"{api.url}/api/callbacks?{query}", headers=api.auth(user)) as r:
                    assert r.status == 200, await r.text()
                    return (await r.json())["items"]

            ann = await get("ann")
            assert [(c["client_id"], c["assignee"], c["reason"], c["status"]) for c in ann] == [
                ("c-ann", "101", "abandoned", "done")]
            assert ann[0]["closed_by_call"] == "1795370491.568" and ann[0]["closed_by"] is None
            assert await get("bob") == []
            staff = await get("sue")
            assert sorted((c["client_id"], c["assignee_kind"], c["status"]) for c in staff) == [
                ("c-ann", "owner", "done"), ("c-desk", "queue", "open")]
            desk = next(c for c in staff if c["client_id"] == "c-desk")
            assert desk["assignee"] == "desk" and desk["call_id"] == "1795370471.550"
            assert [c["id"] for c in await get("sue", "status=open")] == [desk["id"]]
            async with http.get(f"{api.url}/api/callbacks?assignee=102", headers=api.auth("ann")) as r:
                assert r.status == 403

            # a replayed record opens nothing twice
            record = await api.daemon.store.get_call("lab", "1795370471.550")
            assert record is not None and record.outcome == "abandoned"
            keeper.offer(CallFinished(record))
            await keeper.flush()
            assert len(await get("sue")) == 2 and keeper.stats["opened"] == 2

            done = f"{api.url}/api/callbacks/{desk['id']}/done"
            async with http.post(done, headers=api.auth("ann")) as r:
                assert r.status == 404  # not ann's
            async with http.post(f"{api.url}/login", json={"token": api.tokens["sue"]}) as r:
                csrf = (await r.json())["csrf_token"]
            async with http.post(done) as r:  # the session cookie alone: no CSRF token
                assert r.status == 403
            async with http.post(done, headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
                body = await r.json()
                assert body["status"] == "done" and body["closed_by"] == "sue"
            async with http.post(done, headers=api.auth("adam")) as r:  # idempotent
                assert r.status == 200 and (await r.json())["closed_by"] == "sue"
            async with http.post(f"{api.url}/api/callbacks/x1/done", headers=api.auth("adam")) as r:
                assert r.status == 400
            assert await get("sue", "status=open") == []


class _CountingStore:
    """The keeper's store, in memory: counts the queries it is asked."""

    def __init__(self, clients: list[Client]):
        self.clients = {c.id: c for c in clients}
        self.asked: list[list[str]] = []
        self.applied: list = []

    async def get_clients(self, ids):
        self.asked.append(list(ids))
        return {i: self.clients[i] for i in ids if i in self.clients}

    async def clients_by_phone(self, number):
        return []

    async def apply_callbacks(self, actions):
        self.applied.extend(actions)
        return sum(isinstance(a, NewCallback) for a in actions), 0


async def test_the_keeper_asks_the_store_once_per_batch_not_once_per_call() -> None:
    """Under an AMI burst every round trip costs turns of a busy event loop: a query per
    call made the keeper fall thousands of calls behind (tests/bench/soak.py)."""
    store = _CountingStore([Client(id=f"c-{i}", name=f"C{i}", owner_extension="101", phones=()) for i in range(40)])
    keeper = CallbackKeeper(store, None)
    facts = []
    for i in range(50):  # 40 known clients, 10 ids the store does not know
        r = rec("missed", call_id=f"1.{i}").model_copy(update={"client_id": f"c-{i}"})
        facts.append(CallFinished(r, frozenset({r.call_id})))
    await keeper.handle(facts)
    assert len(store.asked) == 1 and sorted(store.asked[0]) == sorted(f"c-{i}" for i in range(50))
    assert [a.client_id for a in store.applied] == [f"c-{i}" for i in range(40)]
    assert all(a.assignee == "101" for a in store.applied)


async def test_list_callbacks_every_filter_shape(store):
    """The statements are built once per shape (store/callbacks.py): each filter, alone and
    together, and the paging, still select what they say, newest first."""
    from datetime import UTC, datetime

    from callrouter.screenpop.callbacks import CloseBy, NewCallback
    t = datetime(2026, 1, 1, tzinfo=UTC)
    news = [NewCallback("main", f"call-{i}", f"c-{i % 3}", f"{100 + i % 2}", "owner", "missed", None, t)
            for i in range(8)]
    await store.apply_callbacks(news)
    await store.apply_callbacks([CloseBy("c-0", "answered-1", None)])  # closes c-0's: calls 0, 3, 6
    all_ = await store.list_callbacks(status="all")
    assert [c.call_id for c in all_] == [f"call-{i}" for i in range(7, -1, -1)]
    ids = {c.call_id: c.id for c in all_}

    async def got(**kw):
        return [c.call_id for c in await store.list_callbacks(**kw)]
    assert await got() == ["call-7", "call-5", "call-4", "call-2", "call-1"]
    assert await got(status="done") == ["call-6", "call-3", "call-0"]
    assert await got(assignee="101") == ["call-7", "call-5", "call-1"]
    assert await got(client_id="c-1") == ["call-7", "call-4", "call-1"]
    assert await got(client_id="c-1", assignee="100") == ["call-4"]
    assert await got(status="all", before=ids["call-4"], limit=2) == ["call-3", "call-2"]
    assert await got(status="done", client_id="c-0", before=ids["call-6"]) == ["call-3", "call-0"]
    assert await got(status="all", limit=1) == ["call-7"]
    calls, open_ = await store.pop_history("c-2")
    assert calls == [] and [c.call_id for c in open_] == ["call-5", "call-2"]
