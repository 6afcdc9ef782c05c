"""The CRM's clients and their phones, as synced into the daemon (CSV import / REST upsert)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from decimal import ROUND_HALF_UP, Decimal
from itertools import islice
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._upsert import BulkDeleteOthers, BulkUpsert, chunks
from .schema import ClientPhone, ClientRow

_clients = ClientRow.__table__
_phones = ClientPhone.__table__

# Clients per transaction when bulk loading: large enough that per-statement overhead
# vanishes, small enough that a SQLite writer lock is held only briefly (the daemon
# keeps logging calls while a CRM import runs).
UPSERT_CHUNK = 5000
_IN_CHUNK = 5000  # ids per `IN (...)` list when reading


class Client(BaseModel):
    """A CRM client as routing and screen-pop see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    name: str
    owner_extension: str | None = None
    monthly_turnover: float | None = None
    tier: str | None = None
    problem: bool = False
    blocked: bool = False
    # E.164 (callrouter.phone.normalize). Kept sorted and unique, so a client read back
    # from the store equals the one written.
    phones: tuple[str, ...] = ()

    @field_validator("phones")
    @classmethod
    def _sorted_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))

    def record(self) -> ClientRecord:
        return ClientRecord(self.id, self.name, self.owner_extension, self.monthly_turnover, self.tier,
                            self.problem, self.blocked, self.phones)


class ClientRecord(NamedTuple):
    """A validated client as the store writes it, for the million-row path (CSV import):
    a typed tuple, built per row at the cost of a tuple and handed to the database as
    one, where a model per row would cost more than the write. Made by
    `Client.record()` and `callrouter.crm.csvimport.read_client_records`."""

    id: str
    name: str
    owner_extension: str | None
    monthly_turnover: float | None
    tier: str | None
    problem: bool
    blocked: bool
    phones: tuple[str, ...]  # E.164, sorted and unique


_UPDATED = ("name", "owner_extension", "monthly_turnover", "tier", "problem", "blocked")
# Unchanged clients and phones are left alone (no write, no `updated_at` bump, no row in
# the change feed): importing the same file twice changes nothing.
_upsert_clients = BulkUpsert(_clients, ("id", *_UPDATED), conflict=("id",), update=_UPDATED,
                             touch="updated_at", if_changed=True)
_delete_other_phones = BulkDeleteOthers(_phones, "client_id", "phone")
_insert_phones = BulkUpsert(_phones, ("client_id", "phone", "raw"), conflict=("client_id", "phone"))


async def upsert_clients(engine: AsyncEngine, clients: Iterable[Client],
                         chunk_size: int = UPSERT_CHUNK) -> int:
    """Insert or replace clients (and their phone lists); returns how many were written.

    Streams `clients` in chunks, one transaction each: memory stays flat for a
    million-row import and a failure keeps the chunks already committed."""
    return await upsert_client_records(engine, (c.record() for c in clients), chunk_size)


async def upsert_client_records(engine: AsyncEngine, records: Iterable[ClientRecord],
                                chunk_size: int = UPSERT_CHUNK) -> int:
    """`upsert_clients` for records (their phones sorted and unique, as ClientRecord says)."""
    it = iter(records)
    written = 0
    while chunk := list(islice(it, chunk_size)):
        latest = {c.id: c for c in chunk}  # the last version of a repeated id wins
        by_id = [latest[i] for i in sorted(latest)]  # same lock order in every writer
        async with engine.begin() as conn:
            await _upsert_chunk(conn, by_id)
        written += len(by_id)
    return written


async def _upsert_chunk(conn: AsyncConnection, by_id: list[ClientRecord]) -> None:
    if conn.dialect.name == "postgresql":
        await _pg_upsert_chunk(conn, by_id)
        return
    await _upsert_clients.run(conn, [c[:7] for c in by_id])  # the record without its phones
    # phone lists are replaced, not merged: the CRM's current list is the truth
    await _delete_other_phones.run(conn, {c.id: c.phones for c in by_id})
    # `raw` keeps the value as handed to the store; records carry E.164 only
    await _insert_phones.run(conn, [(c.id, p, p) for c in by_id for p in c.phones])


# PostgreSQL: the chunk goes in by binary COPY into a session-local staging table (the
# driver encodes a record in C, phones as an array; an INSERT's parameters cost several
# times more), then three statements merge it into both tables. Staged rows go at commit
# or rollback; the table stays for the next chunk on the same connection.
#
# Turnovers are staged as whole cents: a float's exact value (what the driver sends for
# a numeric parameter, 40-odd digits) costs the driver and the server several times
# a bigint, and rounding it to cents here as numeric(18, 2) rounds it (half away from
# zero) stores the same value. A turnover that does not fit in cents of numeric(18, 2)
# (or is not finite) is staged exact, so the server refuses it as it always did.
_PG_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS staged_client_records (id text PRIMARY KEY, name text, "
               "owner_extension text, turnover_cents bigint, tier text, problem boolean, blocked boolean, "
               "phones text[], turnover_exact numeric) ON COMMIT DELETE ROWS")
_STAGED_TURNOVER = "coalesce(turnover_cents * 0.01, turnover_exact)"
_CENT = Decimal("0.01")
_CENTS_FIT = 10 ** 16  # numeric(18, 2) holds less than this


def _staged(c: ClientRecord) -> tuple:
    t = c.monthly_turnover
    if t is None:
        return (*c, None)
    if -_CENTS_FIT < t < _CENTS_FIT:  # (False for inf and nan)
        cents = int(Decimal(t).quantize(_CENT, ROUND_HALF_UP).scaleb(2))
        return (c.id, c.name, c.owner_extension, cents, c.tier, c.problem, c.blocked, c.phones, None)
    return (c.id, c.name, c.owner_extension, None, c.tier, c.problem, c.blocked, c.phones, Decimal(t))


_PG_MERGE = (
    # unchanged clients are not updated: no updated_at bump, no change-feed row
    f"INSERT INTO clients AS t (id, {', '.join(_UPDATED)}) "
    f"SELECT id, {', '.join(_STAGED_TURNOVER if c == 'monthly_turnover' else c for c in _UPDATED)} "
    f"FROM staged_client_records ORDER BY id "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _UPDATED)}, updated_at = now() "
    f"WHERE ({', '.join(f't.{c}' for c in _UPDATED)}) IS DISTINCT FROM "
    f"({', '.join(f'excluded.{c}' for c in _UPDATED)})",
    # phone lists are replaced, not merged; phones that stay are not touched. Each
    # statement is shaped so that no plan is worse than linear in the chunk, whatever
    # the planner believes of the staging table (it has no statistics): the chunk's ids
    # as an array (client_phones read through its primary key, never scanned whole),
    # the staged row of a phone's client found by the staging table's primary key.
    "DELETE FROM client_phones AS t WHERE t.client_id = ANY(ARRAY(SELECT id FROM staged_client_records)) "
    "AND NOT EXISTS (SELECT 1 FROM staged_client_records AS s WHERE s.id = t.client_id AND t.phone = ANY(s.phones))",
    "INSERT INTO client_phones (client_id, phone, raw) SELECT s.id, p.phone, p.phone "
    "FROM staged_client_records AS s CROSS JOIN unnest(s.phones) AS p(phone) ORDER BY s.id, p.phone "
    "ON CONFLICT (client_id, phone) DO NOTHING",
)


async def _pg_upsert_chunk(conn: AsyncConnection, by_id: list[ClientRecord]) -> None:
    await conn.exec_driver_sql(_PG_STAGING)  # through SQLAlchemy: opens the transaction the rest runs in
    pg = (await conn.get_raw_connection()).driver_connection
    await pg.copy_records_to_table("staged_client_records", records=list(map(_staged, by_id)))
    for sql in _PG_MERGE:  # through SQLAlchemy: a refusal raises its error types, as before
        await conn.exec_driver_sql(sql)


async def get_clients(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Client]:
    wanted = list(dict.fromkeys(ids))
    out: dict[str, Client] = {}
    for batch in chunks(wanted, _IN_CHUNK):
        out.update(await _load(conn, batch))
    return out


async def clients_by_phone(conn: AsyncConnection, e164: str) -> list[Client]:
    """Every client listing this phone, by id. More than one is a data problem the
    caller should see (routing reports it), so nothing is picked here."""
    ids = (await conn.scalars(
        select(_phones.c.client_id).where(_phones.c.phone == e164).order_by(_phones.c.client_id))).all()
    found = await _load(conn, list(ids))
    return [found[i] for i in ids if i in found]


async def iter_phone_index(engine: AsyncEngine, batch: int = 10_000) -> AsyncIterator[tuple[str, str]]:
    """Stream every (phone, client_id) pair, for building an in-memory lookup cache.

    Uses a server-side cursor on PostgreSQL, so a few million pairs never sit in one
    result. If you stop early, close it (`contextlib.aclosing`) to release the cursor."""
    async with engine.connect() as conn:
        result = await conn.stream(
            select(_phones.c.phone, _phones.c.client_id).execution_options(yield_per=batch))
        async for rows in result.partitions():
            for phone, client_id in rows:
                yield phone, client_id


async def iter_client_fields(engine: AsyncEngine, batch: int = 5_000) -> AsyncIterator[tuple]:
    """Stream every client's routing fields as plain tuples (id, name, owner_extension,
    monthly_turnover, tier, problem, blocked), read-only, for the in-memory directory."""
    async with engine.connect() as conn:
        result = await conn.stream(
            select(_clients.c.id, _clients.c.name, _clients.c.owner_extension, _clients.c.monthly_turnover,
                   _clients.c.tier, _clients.c.problem, _clients.c.blocked).execution_options(yield_per=batch))
        async for rows in result.partitions():
            for r in rows:
                yield tuple(r)


async def _load(conn: AsyncConnection, ids: list[str]) -> dict[str, Client]:
    if not ids:
        return {}
    phones: dict[str, list[str]] = {}
    for client_id, phone in await conn.execute(
            select(_phones.c.client_id, _phones.c.phone).where(_phones.c.client_id.in_(ids))
            .order_by(_phones.c.client_id, _phones.c.phone)):
        phones.setdefault(client_id, []).append(phone)
    rows = await conn.execute(select(
        _clients.c.id, _clients.c.name, _clients.c.owner_extension, _clients.c.monthly_turnover,
        _clients.c.tier, _clients.c.problem, _clients.c.blocked).where(_clients.c.id.in_(ids)))
    return {
        r.id: Client(id=r.id, name=r.name, owner_extension=r.owner_extension,
                     monthly_turnover=r.monthly_turnover, tier=r.tier, problem=r.problem,
                     blocked=r.blocked, phones=tuple(phones.get(r.id, ())))
        for r in rows
    }
