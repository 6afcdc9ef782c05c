"""Phone -> client(s): the packed in-memory directory against a real SQLite store,
ambiguity, targeted refresh, the store fallback, and `callrouter route`."""
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from click.testing import CliRunner

from callrouter.cli.routing import route as route_cli
from callrouter.routing.lookup import PhoneDirectory, PhoneIndex, StoreLookup
from callrouter.routing.types import ClientInfo
from callrouter.store import Client, Store, upgrade

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"


def _in_thread(make):
    """Run a coroutine from a sync test in its own thread and loop (the CLI does asyncio.run)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


CLIENTS = [
    Client(id="c-1001", name="Ivan Petrov", owner_extension="101", monthly_turnover=120_000,
           phones=("+79161234567", "+74951234567")),
    Client(id="c-2002", name="Retail Shop", monthly_turnover=10_000, phones=("+79035550011",)),
    Client(id="c-3003", name="Alpha", owner_extension="102", monthly_turnover=5, phones=("+79990001122",)),
    Client(id="c-3004", name="Beta", tier="key-accounts", problem=True, phones=("+79990001122",)),
    Client(id="c-4004", name="No Phone"),
]


async def test_directory_from_the_store(store, caplog):
    await store.upsert_clients(CLIENTS)
    d = PhoneDirectory(store)
    assert d.lookup_now("+79161234567") is None  # not loaded yet: ask the store
    with caplog.at_level(logging.WARNING):
        stats = await d.load()
    assert (stats.clients, stats.phones, stats.ambiguous_phones) == (5, 5, 1)
    assert "+79990001122" in caplog.text  # ambiguity is logged at load

    r = d.lookup_now("+79161234567")
    assert r.source == "index" and not r.ambiguous
    assert r.client == ClientInfo("c-1001", "Ivan Petrov", "101", 120_000.0, None, False, False)
    assert d.lookup_now("+74951234567").client.id == "c-1001"

    c = d.lookup_now("+79035550011").client
    assert (c.owner_extension, c.monthly_turnover, c.tier) == (None, 10_000.0, None)

    amb = d.lookup_now("+79990001122")
    assert amb.ambiguous and amb.client is None
    assert [x.id for x in amb.clients] == ["c-3003", "c-3004"]
    assert amb.clients[1].problem and amb.clients[1].tier == "key-accounts"
    assert amb.clients[1].monthly_turnover is None

    assert d.lookup_now("+70000000000").clients == ()
    assert d.lookup_now(None).clients == ()
    assert d.lookup_now("garbage").clients == ()
    assert (await d.lookup("+79161234567")).client.id == "c-1001"


async def test_targeted_refresh_and_full_refresh(store):
    await store.upsert_clients(CLIENTS)
    d = PhoneDirectory(store)
    await d.load()
    # the CRM moves Ivan to a new phone and a new owner; a new client appears
    await store.upsert_clients([
        Client(id="c-1001", name="Ivan Petrov", owner_extension="105", monthly_turnover=120_000,
               phones=("+79160000001",)),
        Client(id="c-5005", name="Newcomer", phones=("+79161234567",)),
    ])
    assert d.lookup_now("+79161234567").client.id == "c-1001"  # stale until told
    await d.refresh_clients(["c-1001", "c-5005", "c-gone"])
    assert d.lookup_now("+79161234567").client.id == "c-5005"
    assert d.lookup_now("+79160000001").client.owner_extension == "105"
    assert d.lookup_now("+74951234567").clients == ()
    # a full rebuild agrees and folds the overlay in
    await d.refresh()
    assert d._overlay == {}
    assert d.lookup_now("+79161234567").client.id == "c-5005"
    assert d.lookup_now("+79160000001").client.owner_extension == "105"
    # a client deleted elsewhere disappears on refresh_clients
    d.apply_clients([], removed=["c-2002"])
    assert d.lookup_now("+79035550011").clients == ()


async def test_store_lookup(store):
    await store.upsert_clients(CLIENTS)
    s = StoreLookup(store)
    assert s.lookup_now("+79161234567") is None
    assert (await s.lookup("+79161234567")).client.name == "Ivan Petrov"
    assert [c.id for c in (await s.lookup("+79990001122")).clients] == ["c-3003", "c-3004"]
    assert (await s.lookup(None)).clients == ()
    assert (await s.lookup("+70000000000")).clients == ()


def test_index_build_skips_bad_rows_and_finds_neighbours():
    clients = [ClientInfo(f"c{i}", f"n{i}", monthly_turnover=i) for i in range(2000)]
    pairs = [(f"+7916{i:07d}", f"c{i}") for i in range(2000)]
    pairs += [("79161234567", "c1"), ("+79160000005", "missing"), ("+79160000007", "c8")]
    idx = PhoneIndex.build(pairs, clients)
    assert idx.stats.skipped == 2 and idx.stats.ambiguous_phones == 1
    assert idx.rows(79160000000) == [0]
    assert sorted(idx.table.id(r) for r in idx.rows(79160000007)) == ["c7", "c8"]
    assert idx.rows(79160001999) == [1999]
    assert idx.rows(79160002000) == [] and idx.rows(1) == [] and idx.rows(10**15) == []
    assert idx.ambiguous_examples() == ["+79160000007"]


def test_route_command_prints_the_decision_and_why(store_url, tmp_path):
    async def seed():
        await upgrade(store_url)
        async with Store(store_url) as store:
            await store.upsert_clients(CLIENTS)
            await store.set_dnd("101", True)
    _in_thread(seed)
    cfg = tmp_path / "callrouter.toml"
    cfg.write_text(f'database_url = "{store_url}"\nrules_dir = "{RULES_DIR}"\n')
    runner = CliRunner()
    res = runner.invoke(route_cli, ["8 (916) 123-45-67", "--at", "2026-11-23T10:00", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "caller:   +79161234567" in res.output
    assert "reason owner-unavailable→tier:wholesale" in res.output   # 101 is on DND in the store
    assert "ROUTE_DIAL=Local/wholesale@queues" in res.output
    assert "rule owner: skipped: owner 101 is DND" in res.output

    res = runner.invoke(route_cli, ["+74950000001", "--at", "2026-11-22T12:00+03:00", "--config", str(cfg),
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert '"reason": "after-hours"' in res.output and '"lead": true' in res.output

    res = runner.invoke(route_cli, ["anonymous", "--at", "2026-11-23T10:00", "--config", str(cfg)])
    assert "reason unknown-caller" in res.output and "no caller ID" in res.output

    res = runner.invoke(route_cli, ["+79161234567", "--at", "yesterday", "--config", str(cfg)])
    assert res.exit_code == 2 and "not an ISO time" in res.output
