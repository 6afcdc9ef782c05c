"""`Store`: the one object the rest of the daemon talks to for persistence."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from callrouter.config import ManagerConfig
from callrouter.records import CallRecord

from . import callbacks, calls, clients, deadletters, managers, queries, routing, users
from .clients import Client
from .deadletters import DeadLetter
from .engine import DEFAULT_STATEMENT_TIMEOUT, make_engine
from .migrate import check_revision

CLOSE_TIMEOUT = 2.0  # s

if TYPE_CHECKING:
    from callrouter.routing.decision import RoutedCall


class Store:
    """Async store over SQLite (`sqlite+aiosqlite:///file.db`) or PostgreSQL
    (`postgresql+asyncpg://...`). Use as `async with Store(url) as store:`.

    Opening checks that the schema is migrated (`callrouter db upgrade`); it never
    creates tables itself. Each write method is one transaction, except
    `upsert_clients`, which commits per chunk of 5000 (see clients.upsert_clients)."""

    def __init__(self, url: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT) -> None:
        self.url = url
        self._statement_timeout = statement_timeout
        self._engine: AsyncEngine | None = None

    async def __aenter__(self) -> Store:
        engine = make_engine(self.url, statement_timeout=self._statement_timeout)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(check_revision)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the pool's connections, within `timeout`: a connection to a database that
        stopped answering (a black-holed network) must not hold a shutdown."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            try:
                await asyncio.wait_for(engine.dispose(), timeout)
            except TimeoutError:
                logging.getLogger(__name__).warning("the database did not close its connections within %.0f s; "
                                                    "leaving them", timeout)

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine, for read-only queries other modules own (reports)."""
        if self._engine is None:
            raise RuntimeError("Store is not open: use `async with Store(url) as store`")
        return self._engine

    # calls
    async def save_call(self, record: CallRecord) -> None:
        await self.save_calls((record,))

    async def save_calls(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        async with self.engine.begin() as conn:
            await calls.save_calls(conn, records)

    async def get_call(self, pbx: str, call_id: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            return await calls.get_call(conn, pbx, call_id)

    async def count_calls(self, pbx: str | None = None) -> int:
        async with self.engine.connect() as conn:
            return await calls.count_calls(conn, pbx)

    # managers and presence
    async def upsert_managers(self, items: Iterable[ManagerConfig]) -> None:
        async with self.engine.begin() as conn:
            await managers.upsert_managers(conn, items)

    async def set_dnd(self, extension: str, on: bool) -> None:
        async with self.engine.begin() as conn:
            await managers.set_dnd(conn, extension, on)

    async def dnd_extensions(self) -> set[str]:
        async with self.engine.connect() as conn:
            return await managers.dnd_extensions(conn)

    # clients
    async def upsert_clients(self, items: Iterable[Client], chunk_size: int = clients.UPSERT_CHUNK) -> int:
        """One transaction per `chunk_size` clients (the API passes its whole body)."""
        return await clients.upsert_clients(self.engine, items, chunk_size)

    async def upsert_client_records(self, records: Iterable[clients.ClientRecord],
                                    chunk_size: int = clients.UPSERT_CHUNK) -> int:
        """`upsert_clients` for the CSV import's records, one transaction per chunk."""
        return await clients.upsert_client_records(self.engine, records, chunk_size)

    async def clients_by_phone(self, e164: str) -> list[Client]:
        async with self.engine.connect() as conn:
            return await clients.clients_by_phone(conn, e164)

    async def get_clients(self, ids: Iterable[str]) -> dict[str, Client]:
        async with self.engine.connect() as conn:
            return await clients.get_clients(conn, ids)

    def iter_phone_index(self) -> AsyncIterator[tuple[str, str]]:
        return clients.iter_phone_index(self.engine)

    def iter_client_fields(self, batch: int = 5_000) -> AsyncIterator[tuple]:
        """(id, name, owner_extension, monthly_turnover, tier, problem, blocked) of every client."""
        return clients.iter_client_fields(self.engine, batch)

    # routing audit and leads
    async def save_route_decision(self, call: RoutedCall) -> None:
        """One routing answer's decision (not its lead: see save_routing_batch)."""
        async with self.engine.begin() as conn:
            await routing.save_route_decision(conn, call)

    async def save_lead(self, pbx: str, phone: str, raw: str | None, call_id: str | None) -> bool:
        async with self.engine.begin() as conn:
            return await routing.save_lead(conn, pbx, phone, raw, call_id)

    async def save_route_decisions(self, calls: Sequence[RoutedCall]) -> None:
        async with self.engine.begin() as conn:
            await routing.save_route_decisions(conn, calls)

    async def save_leads(self, leads: Sequence[tuple[str, str, str | None, str | None]]) -> None:
        async with self.engine.begin() as conn:
            await routing.save_leads(conn, leads)

    async def save_routing_batch(self, calls: Sequence[RoutedCall]) -> int:
        """Routing answers and the leads they created (`RoutedCall.lead()`), in one
        transaction (all or nothing); the number of leads offered."""
        leads = [lead for c in calls if (lead := c.lead()) is not None]
        async with self.engine.begin() as conn:
            await routing.save_route_decisions(conn, calls)
            if leads:
                await routing.save_leads(conn, leads)
        return len(leads)

    # REST API: users (tokens are made and checked in callrouter.web.tokens)
    async def add_user(self, name: str, role: users.Role, extension: str | None, token_id: str,
                       token_hash: str) -> users.User:
        async with self.engine.begin() as conn:
            return await users.add_user(conn, name, role, extension, token_id, token_hash)

    async def list_users(self) -> list[users.User]:
        async with self.engine.connect() as conn:
            return await users.list_users(conn)

    async def revoke_user(self, name: str) -> bool:
        async with self.engine.begin() as conn:
            return await users.revoke_user(conn, name)

    async def user_by_token_id(self, token_id: str) -> tuple[users.User, str] | None:
        async with self.engine.connect() as conn:
            return await users.user_by_token_id(conn, token_id)

    async def user_by_id(self, user_id: int) -> users.User | None:
        async with self.engine.connect() as conn:
            return await users.user_by_id(conn, user_id)

    # REST API: reads (store/queries.py)
    async def search_clients(self, **kw: Any) -> list[Client]:
        async with self.engine.connect() as conn:
            return await queries.search_clients(conn, **kw)

    async def delete_client(self, client_id: str) -> bool:
        async with self.engine.begin() as conn:
            return await queries.delete_client(conn, client_id)

    async def list_managers(self, extensions: Sequence[str] | None = None) -> list[queries.ManagerRow]:
        async with self.engine.connect() as conn:
            return await queries.list_managers(conn, extensions)

    async def manager_extensions(self, extensions: Sequence[str]) -> set[str]:
        async with self.engine.connect() as conn:
            return await queries.manager_extensions(conn, extensions)

    async def list_calls(self, f: queries.CallFilter, *, before: int | None = None,
                         limit: int = 100) -> list[tuple[int, CallRecord]]:
        async with self.engine.connect() as conn:
            return await queries.list_calls(conn, f, before=before, limit=limit)

    async def call_with_decisions(self, pbx: str, call_id: str, *, visible_to: str | None = None
                                  ) -> tuple[CallRecord, list[queries.StoredDecision]] | None:
        async with self.engine.connect() as conn:
            return await queries.call_with_decisions(conn, pbx, call_id, visible_to=visible_to)

    # callbacks and the screen-pop card's history (store/callbacks.py)
    async def apply_callbacks(self, actions: Sequence[callbacks.NewCallback | callbacks.CloseBy]
                              ) -> tuple[int, int]:
        """Open (idempotent by call) and close callbacks, in the order of the calls that
        caused them; one transaction. (opened, closed) counts."""
        n_open = n_closed = 0
        async with self.engine.begin() as conn:
            # most answered calls close nothing: one query finds the clients with an open
            # callback, and only theirs get an UPDATE (a statement per call is a round trip
            # per call, which a batch of hundreds cannot afford during an AMI burst)
            closing = {a.client_id for a in actions if isinstance(a, callbacks.CloseBy)}
            has_open = await callbacks.clients_with_open(conn, closing) if closing else set()
            for a in actions:
                if isinstance(a, callbacks.CloseBy):
                    if a.client_id in has_open:
                        n_closed += await callbacks.close_by_call(conn, a.client_id, a.call_id, a.started_at)
                else:
                    n_open += await callbacks.open_callback(conn, a)
                    has_open.add(a.client_id)  # opened (or already open): a later call may close it
        return n_open, n_closed

    async def list_callbacks(self, **kw: Any) -> list[callbacks.Callback]:
        async with self.engine.connect() as conn:
            return await callbacks.list_callbacks(conn, **kw)

    async def callback_done(self, callback_id: int, user: str, visible_to: str | None = None
                            ) -> callbacks.Callback | None:
        async with self.engine.begin() as conn:
            return await callbacks.mark_done(conn, callback_id, user, visible_to)

    async def pop_history(self, client_id: str, limit: int = 5
                          ) -> tuple[list[callbacks.RecentCallRow], list[callbacks.Callback]]:
        """A card's last calls and open callbacks, on one connection."""
        async with self.engine.connect() as conn:
            return (await callbacks.recent_calls(conn, client_id, limit),
                    await callbacks.list_callbacks(conn, client_id=client_id, limit=20))

    async def ping(self) -> None:
        """One round trip to the database (health checks)."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    # what the database refused twice (callrouter.store.writer splits, then dead-letters)
    async def save_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        async with self.engine.begin() as conn:
            await deadletters.save_dead_letters(conn, letters)

    async def dead_letters(self, limit: int = 100, kind: str | None = None) -> list[DeadLetter]:
        async with self.engine.connect() as conn:
            return await deadletters.list_dead_letters(conn, limit, kind)
