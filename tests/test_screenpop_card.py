"""The pop's card against the real PostgreSQL behind a controlled TCP proxy: with the
database answering, the card has its history; black-holed, the pop still comes within its
deadline, with the card from memory and `card_status: "no-history"`."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy.engine import make_url

from callrouter.records import Party
from callrouter.routing.lookup import PhoneDirectory
from callrouter.screenpop.builder import CardSource
from callrouter.store import Client, Store, upgrade
from callrouter.tracker import AgentRinging
from conftest import _pg_execute, run_in_thread
from pgproxy import PgProxy
from webfixture import call

CLIENT = Client(id="c-ann", name="Анна Клиентова", owner_extension="101", tier="retail", phones=("+79161234567",))
RINGING = AgentRinging("lab", "1795370423.504", "101", "PJSIP/101", Party(number="+79161234567", name="x"), None,
                       datetime(2026, 11, 23, 7, tzinfo=UTC))


async def test_card_with_history_then_without_when_the_database_hangs(pg_database: str) -> None:
    run_in_thread(lambda: _pg_execute(pg_database, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    await upgrade(pg_database)
    async with Store(pg_database) as store:
        await store.upsert_clients([CLIENT])
        await store.save_calls([call("1700000001.1", "101", "c-ann", 0)])
    u = make_url(pg_database)
    async with PgProxy(u.host or "127.0.0.1", u.port or 5432) as proxy:
        url = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with Store(url) as store:
            cards = CardSource(PhoneDirectory.from_clients([CLIENT]), store, None, timeout=0.3)
            card, status = await cards.card(RINGING, None)
            assert status == "ok" and card is not None
            assert [c.call_id for c in card.recent_calls] == ["1700000001.1"] and card.owner == "101"

            proxy.blackhole()
            card, status = await asyncio.wait_for(cards.card(RINGING, None), 10)
            assert status == "no-history" and card is not None
            assert card.name == "Анна Клиентова" and card.recent_calls == [] and cards.stats["card-late"] == 1
            await proxy.restore()
