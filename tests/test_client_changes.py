"""The client change feed on SQLite and PostgreSQL: the triggers record every client
another process upserts, re-phones or deletes (and nothing for a write that changes
nothing); a follower on another Store sees them, holes left by uncommitted transactions
are filled in later, and a burst becomes "reload everything"."""
from __future__ import annotations

import asyncio

from sqlalchemy import delete, func, select, text

from callrouter.store import Client, Store
from callrouter.store import changes as feed_mod
from callrouter.store.changes import ClientChangeFeed
from callrouter.store.schema import ClientChange, ClientRow


async def _count(store: Store) -> int:
    async with store.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(ClientChange.__table__))


async def _updated_at(store: Store, cid: str):
    async with store.engine.connect() as conn:
        return await conn.scalar(select(ClientRow.__table__.c.updated_at).where(ClientRow.__table__.c.id == cid))


def ivan(**kw) -> Client:
    return Client(**{"id": "c-1", "name": "Ivan", "owner_extension": "101", "monthly_turnover": 1234.56,
                     "phones": ("+79161111111", "+79162222222"), **kw})


async def test_triggers_record_real_changes_only(store: Store, store_url: str) -> None:
    feed = ClientChangeFeed(store, listen=False)
    await feed.start()
    await store.upsert_clients([ivan(), Client(id="c-2", name="Olga")])
    assert await feed.poll_once() == {"c-1", "c-2"}
    stamp = await _updated_at(store, "c-1")

    await store.upsert_clients([ivan(), Client(id="c-2", name="Olga")])  # the same again
    assert await feed.poll_once() == frozenset()
    assert await _updated_at(store, "c-1") == stamp

    await store.upsert_clients([ivan(phones=("+79162222222", "+79163333333"))])  # phones only
    assert await feed.poll_once() == {"c-1"}
    assert [c.id for c in await store.clients_by_phone("+79163333333")] == ["c-1"]
    assert await store.clients_by_phone("+79161111111") == []

    await store.upsert_clients([Client(id="c-2", name="Olga", blocked=True)])  # a field only
    assert await feed.poll_once() == {"c-2"}

    async with store.engine.begin() as conn:  # a delete by whoever: plain SQL here
        await conn.execute(delete(ClientRow.__table__).where(ClientRow.__table__.c.id == "c-2"))
    assert await feed.poll_once() == {"c-2"}


async def test_a_follower_on_another_connection_sees_a_commit_within_a_second(store: Store,
                                                                              store_url: str) -> None:
    async with Store(store_url) as other:
        feed = ClientChangeFeed(other)
        await feed.start()
        seen: asyncio.Queue = asyncio.Queue(maxsize=10)
        follower = asyncio.create_task(feed.run(seen.put))
        try:
            if store.engine.dialect.name == "postgresql":
                for _ in range(100):  # LISTEN is up: a NOTIFY wakes the poll
                    if feed.listening:
                        break
                    await asyncio.sleep(0.05)
                assert feed.listening
            await store.upsert_clients([ivan()])
            assert await asyncio.wait_for(seen.get(), 1.0) == {"c-1"}
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    if store.engine.dialect.name == "postgresql":
        assert feed.stats["notifications"] >= 1


async def test_a_seq_committed_late_is_not_missed(store: Store, store_url: str) -> None:
    """PostgreSQL hands out seqs at insert, commits in any order: a follower that saw 12
    before 11 committed asks for 11 again. Played here with explicit seqs."""
    feed = ClientChangeFeed(store, listen=False)
    await feed.start()
    base = feed.last_seq
    async with store.engine.begin() as conn:
        await conn.execute(ClientChange.__table__.insert(), [{"seq": base + 2, "client_id": "late-2"}])
    assert await feed.poll_once() == {"late-2"}
    async with store.engine.begin() as conn:
        await conn.execute(ClientChange.__table__.insert(), [{"seq": base + 1, "client_id": "late-1"}])
    assert await feed.poll_once() == {"late-1"}
    assert await feed.poll_once() == frozenset()


async def test_a_burst_asks_for_a_full_reload(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(feed_mod, "BULK", 50)
    feed = ClientChangeFeed(store, listen=False)
    await feed.start()
    await store.upsert_clients(Client(id=f"c-{i}", name="x", phones=(f"+7916{i:07d}",)) for i in range(60))
    assert await feed.poll_once() is None
    assert await feed.poll_once() == frozenset()
    assert await _count(store) == 120  # one row per client for its row, one for its phone list


async def test_seen_rows_are_pruned(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(feed_mod, "RETENTION", 0.0)
    feed = ClientChangeFeed(store, listen=False)
    await feed.start()
    await store.upsert_clients([ivan()])
    assert await feed.poll_once() == {"c-1"}
    await asyncio.sleep(0.01)
    await feed._prune()
    assert await _count(store) == 0
    await store.upsert_clients([ivan(name="Ivan P.")])  # seqs go on after an empty table
    assert await feed.poll_once() == {"c-1"}


async def test_text_sql_upsert_is_seen_too(store: Store) -> None:
    feed = ClientChangeFeed(store, listen=False)
    await feed.start()
    async with store.engine.begin() as conn:
        await conn.execute(text("INSERT INTO clients (id, name) VALUES ('c-sql', 'From SQL')"))
    assert await feed.poll_once() == {"c-sql"}
