"""The store against real databases (SQLite file and PostgreSQL; see conftest.py)."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from callrouter.config import ManagerConfig
from callrouter.records import CallRecord
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.store import Client, SchemaNotCurrent, Store, upgrade
from callrouter.store import clients as store_clients
from callrouter.store.clients import ClientRecord
from callrouter.store.engine import make_engine
from callrouter.store.migrate import current, head
from callrouter.store.routing import decision_columns
from callrouter.store.schema import Call, CallLeg, ClientChange, Lead, ManagerDevice, RouteDecisionRow, metadata

# The DESIGN.md example, as the tracker would emit it (note the +03:00 offsets).
ANSWERED_JSON = """{
 "schema": 1, "pbx": "main", "call_id": "1795370004.5", "direction": "in",
 "caller": {"number": "+79161234567", "raw": "89161234567", "name": "Ivan Petrov"},
 "callee": {"number": null, "raw": "100", "name": null},
 "client_id": "c-1001",
 "route": {"rule": "owner", "reason": "owner", "dial": "PJSIP/101", "latency_ms": 0.4},
 "started_at": "2026-11-22T20:51:43.120+03:00", "answered_at": "2026-11-22T20:51:47.120+03:00",
 "ended_at": "2026-11-22T20:52:17.120+03:00",
 "ring_seconds": 4.0, "talk_seconds": 30.0, "duration_seconds": 34.0,
 "outcome": "answered", "hangup_by": "caller", "answered_by": "102", "final_agent": "104",
 "queue": "retail",
 "legs": [{"agent": "101", "device": "PJSIP/101", "ring_seconds": 4.0, "result": "no-answer"},
          {"agent": "102", "device": "PJSIP/102", "ring_seconds": 4.0, "result": "answered",
           "queue": "retail"},
          {"agent": "103", "device": "PJSIP/103", "ring_seconds": 4.0,
           "result": "answered-elsewhere", "queue": "retail"}],
 "transfers": [{"kind": "blind", "from": "102", "to": "104"}],
 "recording": "/var/spool/asterisk/monitor/1795370004.5.wav",
 "complete": true
}"""
ANSWERED = CallRecord.model_validate_json(ANSWERED_JSON)


def record(**changes: Any) -> CallRecord:
    """ANSWERED with some fields changed, validated like any incoming record."""
    return CallRecord.model_validate({**ANSWERED.to_dict(), **changes})


async def legs_of(store: Store, pbx: str, call_id: str) -> list[tuple[int, str | None, str]]:
    legs, calls = CallLeg.__table__, Call.__table__
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(legs.c.seq, legs.c.agent, legs.c.result).join(calls, calls.c.id == legs.c.call_id)
            .where(calls.c.pbx == pbx, calls.c.call_id == call_id).order_by(legs.c.seq))
        return [tuple(r) for r in rows]


# migrations

async def test_upgrade_creates_schema_matching_models(store_url: str) -> None:
    assert await current(store_url) is None
    await upgrade(store_url)
    assert await current(store_url) == head()
    await upgrade(store_url)  # already at head: a no-op, not an error

    engine = make_engine(store_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            # the models (used by queries) and the migrations (which built the DB) agree
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()
    assert {"managers", "manager_devices", "clients", "client_phones", "calls", "call_legs",
            "route_decisions", "leads", "alembic_version"} <= tables
    assert diff == []


async def test_upgrade_builds_the_models_covering_indexes(store_url: str) -> None:
    """Alembic's comparison ignores INCLUDE columns: check them against the models here
    (PostgreSQL's catalog; SQLite has no INCLUDE, so there the key columns only)."""
    await upgrade(store_url)
    engine = make_engine(store_url)
    try:
        async with engine.connect() as conn:
            found = {}
            for table in ("calls", "call_legs"):
                for ix in await conn.run_sync(lambda c, t=table: inspect(c).get_indexes(t)):
                    found[ix["name"]] = (ix["column_names"],
                                        list(ix.get("dialect_options", {}).get("postgresql_include") or []))
            dialect = conn.dialect.name
    finally:
        await engine.dispose()
    expected = {ix.name: ([col.name for col in ix.columns],
                          list(ix.dialect_options["postgresql"]["include"] or []) if dialect == "postgresql" else [])
                for ix in (*Call.__table__.indexes, *CallLeg.__table__.indexes)}
    for name in ("ix_calls_started_at", "ix_calls_unanswered_in", "ix_call_legs_agent_call_id",
                 "ix_call_legs_call_id_agent"):
        assert found[name] == expected[name], name
    if dialect == "postgresql":
        assert "ring_seconds" in found["ix_calls_started_at"][1]
    assert "ix_call_legs_agent" not in found


async def test_store_refuses_unmigrated_database(store_url: str) -> None:
    with pytest.raises(SchemaNotCurrent, match="callrouter db upgrade"):
        async with Store(store_url):
            pass


# calls

async def test_save_call_twice_keeps_one_row_and_replaces_legs(store: Store) -> None:
    await store.save_call(ANSWERED)
    assert len(await legs_of(store, "main", ANSWERED.call_id)) == 3

    shorter = record(legs=[{"agent": "102", "device": "PJSIP/102", "ring_seconds": 2.0,
                            "result": "answered"}], answered_by="102", final_agent="102",
                     transfers=[])
    await store.save_call(shorter)
    await store.save_call(shorter)

    assert await store.count_calls() == 1
    assert await legs_of(store, "main", ANSWERED.call_id) == [(0, "102", "answered")]
    assert await store.get_call("main", ANSWERED.call_id) == shorter


async def test_save_calls_batch_of_40_distinct(store: Store) -> None:
    batch = [record(call_id=f"1795370{i:03d}.1") for i in range(40)]
    await store.save_calls(batch)
    await store.save_calls(batch)  # replaying a batch (e.g. after a crash) adds nothing

    assert await store.count_calls() == 40
    assert await store.count_calls(pbx="main") == 40
    assert await store.count_calls(pbx="branch") == 0
    assert await store.get_call("main", batch[17].call_id) == batch[17]
    assert len(await legs_of(store, "main", batch[39].call_id)) == 3


async def test_same_call_id_on_two_pbxes_is_two_calls(store: Store) -> None:
    await store.save_calls([ANSWERED, record(pbx="branch")])
    assert await store.count_calls() == 2
    assert (await store.get_call("branch", ANSWERED.call_id)).pbx == "branch"


async def test_batch_repeating_a_call_keeps_the_last_version(store: Store) -> None:
    first = record(outcome="missed", answered_by=None, final_agent=None, answered_at=None)
    await store.save_calls([first, ANSWERED])
    assert await store.count_calls() == 1
    assert await store.get_call("main", ANSWERED.call_id) == ANSWERED


async def test_incomplete_record_is_replaced_by_the_complete_one(store: Store) -> None:
    partial = record(complete=False, gaps=["AMI disconnected 20:51:50-20:52:30"],
                     outcome="missed", answered_at=None, answered_by=None, final_agent=None,
                     ended_at=None, talk_seconds=None, duration_seconds=None,
                     legs=[ANSWERED.legs[0].model_dump(by_alias=True)], transfers=[])
    await store.save_call(partial)
    assert (await store.get_call("main", ANSWERED.call_id)).complete is False

    await store.save_call(ANSWERED)

    assert await store.count_calls() == 1
    assert await store.get_call("main", ANSWERED.call_id) == ANSWERED
    assert len(await legs_of(store, "main", ANSWERED.call_id)) == 3
    calls = Call.__table__
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(calls).where(calls.c.call_id == ANSWERED.call_id))).one()
    # the query columns follow the record, not only the JSON
    assert (row.complete, row.outcome, row.answered_by, row.final_agent) == (True, "answered", "102", "104")
    assert (row.route_rule, row.route_dial, row.caller_number) == ("owner", "PJSIP/101", "+79161234567")


async def test_get_call_round_trips_the_record(store: Store) -> None:
    await store.save_call(ANSWERED)
    got = await store.get_call("main", ANSWERED.call_id)
    assert got == ANSWERED
    assert got.to_dict() == ANSWERED.to_dict()
    assert await store.get_call("main", "no-such-call") is None
    assert await store.get_call("other-pbx", ANSWERED.call_id) is None


async def test_timestamp_columns_are_utc_and_aware(store: Store) -> None:
    await store.save_call(ANSWERED)
    calls = Call.__table__
    async with store.engine.connect() as conn:
        started, ended = (await conn.execute(select(calls.c.started_at, calls.c.ended_at))).one()
    assert started == datetime(2026, 11, 22, 17, 51, 43, 120000, tzinfo=UTC)
    assert started.utcoffset().total_seconds() == 0 and ended == ANSWERED.ended_at


# clients

async def test_phone_on_two_clients_finds_both(store: Store) -> None:
    shared = "+74951234567"
    a = Client(id="c-1001", name="Romashka LLC", owner_extension="101", monthly_turnover=120000.5,
               tier="wholesale", phones=("+79161234567", shared))
    b = Client(id="c-1002", name="Vasilek", phones=(shared,), problem=True)
    c = Client(id="c-1003", name="Other", phones=("+79990000000",), blocked=True)
    assert await store.upsert_clients([a, b, c]) == 3

    assert await store.clients_by_phone(shared) == [a, b]
    assert await store.clients_by_phone("+79161234567") == [a]
    assert await store.clients_by_phone("+70000000000") == []
    assert await store.get_clients(["c-1003", "c-1001", "nope"]) == {"c-1003": c, "c-1001": a}
    assert sorted([p async for p in store.iter_phone_index()]) == [
        ("+74951234567", "c-1001"), ("+74951234567", "c-1002"),
        ("+79161234567", "c-1001"), ("+79990000000", "c-1003")]


async def test_upsert_clients_replaces_fields_and_phones(store: Store) -> None:
    await store.upsert_clients([Client(id="c-1", name="Old", phones=("+79161111111", "+79162222222"))])
    new = Client(id="c-1", name="New", monthly_turnover=50000.0, tier="wholesale",
                 phones=("+79162222222", "+79163333333"))
    # in one batch too, the last version of a client wins
    await store.upsert_clients([Client(id="c-1", name="Stale"), new])

    assert await store.get_clients(["c-1"]) == {"c-1": new}
    assert await store.clients_by_phone("+79161111111") == []
    assert await store.clients_by_phone("+79163333333") == [new]


async def test_upsert_clients_in_several_chunks(store: Store) -> None:
    many = (Client(id=f"c-{i}", name=f"Client {i}", phones=(f"+7916{i:07d}",)) for i in range(12_000))
    assert await store.upsert_clients(many) == 12_000  # > one 5000-client chunk, streamed
    assert [c.id for c in await store.clients_by_phone("+79160011999")] == ["c-11999"]
    assert len([p async for p in store.iter_phone_index()]) == 12_000


async def test_client_records_store_what_the_row_insert_stored(store: Store) -> None:
    """The staged write (COPY on PostgreSQL) stores what the parameterized multi-row
    INSERT it replaced stores, turnovers rounded to cents alike; a second write of the
    same data changes nothing."""
    turnovers = (1.005, 0.125, 2.675, 0.015, -1.005, 1234567.89, 12345678901234.56, 99999999999999.99,
                 0.5, 0.0, -0.0, None)
    records = [ClientRecord(f"r-{i}", f"C {i}", "101" if i % 2 else None, t, "vip" if i % 3 else None,
                            bool(i % 2), bool(i % 3), (f"+7916000001{i}",)) for i, t in enumerate(turnovers)]
    assert await store.upsert_client_records(records) == len(records)
    async with store.engine.begin() as conn:  # the statement the API and import used before
        await store_clients._upsert_clients.run(conn, [("o" + r.id[1:], *r[1:7]) for r in records])
    got = await store.get_clients([r.id for r in records] + ["o" + r.id[1:] for r in records])
    assert [got[r.id].model_dump(exclude={"id", "phones"}) for r in records] == \
        [got["o" + r.id[1:]].model_dump(exclude={"id", "phones"}) for r in records]
    assert got["r-5"].monthly_turnover == 1234567.89 and got["r-1"].owner_extension == "101"
    changes = await _change_count(store)
    await store.upsert_client_records(records)
    await store.upsert_clients([Client(id=r.id, name=r.name, owner_extension=r.owner_extension,
                                       monthly_turnover=got[r.id].monthly_turnover, tier=r.tier,
                                       problem=r.problem, blocked=r.blocked, phones=r.phones) for r in records])
    assert await _change_count(store) == changes


async def test_a_turnover_beyond_numeric_18_2_is_refused_as_before(store: Store) -> None:
    """Too big for the column (or infinite): the staged write and the row insert it replaced
    both refuse it, or (SQLite, no such limit) both store it."""
    for i, t in enumerate((1e16, 1e17, float("inf"))):
        outcomes = []
        for write in ("records", "row insert"):
            try:
                if write == "records":
                    await store.upsert_client_records([ClientRecord(f"r-{i}", "R", None, t, None, False, False, ())])
                else:
                    async with store.engine.begin() as conn:
                        await store_clients._upsert_clients.run(conn, [(f"o-{i}", "O", None, t, None, False, False)])
                outcomes.append("stored")
            except Exception as e:  # noqa: BLE001 - which error, compared below
                outcomes.append(type(e).__name__)
        assert outcomes[0] == outcomes[1], (t, outcomes)


async def test_a_refused_chunk_leaves_nothing_behind(store: Store) -> None:
    """A chunk the database refuses is rolled back whole, and nothing of it is left
    staged for the next chunk written on the same connection."""
    good = ClientRecord("c-1", "Good", None, None, None, False, False, ("+79161234567",))
    bad = ClientRecord("c-2", "Bad", None, None, None, False, False, (None,))  # a phone must not be NULL
    with pytest.raises(Exception):
        await store.upsert_client_records([good, bad])
    assert await store.get_clients(["c-1", "c-2"]) == {}
    other = ClientRecord("c-3", "Other", None, None, None, False, False, ("+79161234568",))
    for _ in range(2):  # again, on a connection that has staged before
        await store.upsert_client_records([other])
    assert set(await store.get_clients(["c-1", "c-2", "c-3"])) == {"c-3"}
    assert sorted([p async for p in store.iter_phone_index()]) == [("+79161234568", "c-3")]


async def _change_count(store: Store) -> int:
    async with store.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(ClientChange))


# managers and presence

async def test_dnd(store: Store) -> None:
    await store.upsert_managers([ManagerConfig(extension="101", name="Anna", devices=("PJSIP/101",)),
                                 ManagerConfig(extension="102", devices=("PJSIP/102",))])
    assert await store.dnd_extensions() == set()

    await store.set_dnd("101", True)
    await store.set_dnd("205", True)  # reported by the PBX, not configured: still honoured
    assert await store.dnd_extensions() == {"101", "205"}

    # a config reload keeps live DND state and may move a device between managers
    await store.upsert_managers([ManagerConfig(extension="101", name="Anna K.",
                                               devices=("PJSIP/101", "PJSIP/102"))])
    assert await store.dnd_extensions() == {"101", "205"}
    async with store.engine.connect() as conn:
        devices = dict((await conn.execute(select(ManagerDevice.device, ManagerDevice.extension))).all())
    assert devices == {"PJSIP/101": "101", "PJSIP/102": "101"}

    await store.set_dnd("101", False)
    assert await store.dnd_extensions() == {"205"}


# routing audit and leads

async def test_leads_are_idempotent_per_pbx_and_phone(store: Store) -> None:
    assert await store.save_lead("main", "+79165550000", "89165550000", "1795370004.5") is True
    assert await store.save_lead("main", "+79165550000", "+7 916 555-00-00", "1795370099.1") is False
    assert await store.save_lead("branch", "+79165550000", "89165550000", "42.1") is True


def _routed(linkedid: str, decided_at: datetime, **decision: Any) -> RoutedCall:
    d = RouteDecision(**({"rule": "owner", "reason": "owner-unavailable→tier:retail", "dial": "Local/retail@queues",
                          "timeout": 20, "fallback": "Local/support@queues", "client_id": "c-1001",
                          "caller": "+79161234567", "trace": ("rule blocklist: no", "rule owner: MATCH"),
                          "rules_version": 3, "lookup": "index"} | decision))
    return RoutedCall("main", linkedid, "1795370004.6", "PJSIP/trunk-00000001", "89161234567", d, decided_at,
                      0.7, 1.25, "answered")


def _saved(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row._mapping.items() if k != "id"}


async def test_route_decision_is_saved(store: Store) -> None:
    call = _routed("1795370004.5", datetime.fromisoformat("2026-11-22T20:51:43.125+03:00"))
    await store.save_route_decision(call)

    t = RouteDecisionRow.__table__
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(t).where(t.c.pbx == "main", t.c.linkedid == "1795370004.5"))).one()
    saved = _saved(row)
    assert saved == decision_columns(call)
    assert (saved["decided_at"], saved["caller_raw"], saved["caller_number"], saved["client_id"], saved["rule"],
            saved["reason"], saved["dial"], saved["timeout"], saved["fallback"], saved["latency_ms"]) == (
        call.decided_at, "89161234567", "+79161234567", "c-1001", "owner", "owner-unavailable→tier:retail",
        "Local/retail@queues", 20, "Local/support@queues", 0.7)
    assert saved["trace"] == {"steps": ["rule blocklist: no", "rule owner: MATCH"], "candidates": [], "lead": False,
                              "owner": None, "client_name": "", "uniqueid": "1795370004.6",
                              "channel": "PJSIP/trunk-00000001", "outcome": "answered", "answer_ms": 1.25,
                              "rules_version": 3, "lookup": "index"}


async def test_batches_of_leads_and_decisions(store: Store) -> None:
    await store.save_leads([("main", "+79165550001", "89165550001", "1.1"),
                            ("main", "+79165550002", None, "1.2"),
                            ("main", "+79165550001", "dup", "1.3")])
    await store.save_leads([("main", "+79165550002", None, "1.4")])
    leads = Lead.__table__
    async with store.engine.connect() as conn:
        got = (await conn.execute(select(leads.c.phone, leads.c.raw, leads.c.call_id)
                                  .order_by(leads.c.phone))).all()
    assert [tuple(r) for r in got] == [("+79165550001", "89165550001", "1.1"), ("+79165550002", None, "1.2")]
    rows = [_routed(f"1.{i}", datetime.now(UTC), caller=None, client_id=None, rule="unknown-caller",
                    reason="unknown-caller", dial="Local/leads@queues", fallback="", trace=())
            for i in range(3)]
    await store.save_route_decisions(rows)
    t = RouteDecisionRow.__table__
    async with store.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(t))).scalar_one()
    assert n == 3


async def test_batched_decisions_read_back_equal(store: Store) -> None:
    """The SQLite fast path stores exactly what the typed path would."""
    rows = [_routed(f"2.{i}", datetime.fromisoformat(f"2026-11-22T20:51:4{i}.125+03:00"), rule="owner",
                    reason="owner", dial="PJSIP/101", timeout=15, fallback="", client_id="c-1",
                    trace=("owner: present",))
            for i in range(2)]
    await store.save_route_decisions(rows)
    typed = [replace(r, linkedid=f"3.{i}", uniqueid=f"3.{i}") for i, r in enumerate(rows)]
    for r in typed:
        await store.save_route_decision(r)
    t = RouteDecisionRow.__table__
    async with store.engine.connect() as conn:
        got = (await conn.execute(select(t).where(t.c.linkedid.like("2.%")).order_by(t.c.linkedid))).all()
        got_typed = (await conn.execute(select(t).where(t.c.linkedid.like("3.%")).order_by(t.c.linkedid))).all()
    assert [_saved(r) for r in got] == [decision_columns(r) for r in rows]
    def but_the_ids(row: Any) -> dict[str, Any]:
        return _saved(row) | {"linkedid": "x", "uniqueid": "x", "trace": row.trace | {"uniqueid": "x"}}
    assert [but_the_ids(r) for r in got] == [but_the_ids(r) for r in got_typed]


async def test_a_routing_batch_stores_decisions_and_their_leads_together(store: Store) -> None:
    calls = [_routed("4.1", datetime.now(UTC)),
             _routed("4.2", datetime.now(UTC), caller="+74950000001", client_id=None, lead=True),
             _routed("", datetime.now(UTC), caller="+74950000002", client_id=None, lead=True)]
    assert await store.save_routing_batch(calls) == 2
    leads = Lead.__table__
    async with store.engine.connect() as conn:
        got = (await conn.execute(select(leads.c.phone, leads.c.call_id).order_by(leads.c.phone))).all()
        n = (await conn.execute(select(func.count()).select_from(RouteDecisionRow.__table__))).scalar_one()
    # no linkedid: the AGI channel's uniqueid is the call
    assert [tuple(r) for r in got] == [("+74950000001", "4.2"), ("+74950000002", "1795370004.6")] and n == 3


async def test_a_replayed_routing_batch_is_a_no_op(store: Store) -> None:
    """A batch resent by the decision log or replayed from the spool stores nothing twice:
    not the decisions (their natural key: pbx, uniqueid, decided_at) nor the leads."""
    at = datetime.fromisoformat("2026-11-22T20:51:43.125001+03:00")
    calls = [replace(_routed(f"5.{i}", at), uniqueid=f"5.{i}") for i in range(3)]
    calls.append(replace(_routed("5.9", at, caller="+74950000009", client_id=None, lead=True), uniqueid="5.9"))
    again = replace(calls[0], uniqueid="5.0")  # the same answer, as a replay carries it
    for _ in range(2):
        await store.save_routing_batch(calls)
    await store.save_route_decisions([again])
    await store.save_route_decision(again)
    # a second answer to the same channel (routed again after a failed Dial) is a new decision
    later = replace(calls[0], decided_at=datetime.fromisoformat("2026-11-22T20:52:03.5+03:00"))
    await store.save_routing_batch([later])
    async with store.engine.connect() as conn:
        keys = (await conn.execute(select(RouteDecisionRow.uniqueid, RouteDecisionRow.decided_at)
                                   .order_by(RouteDecisionRow.id))).all()
        leads = (await conn.execute(select(Lead.phone))).scalars().all()
    assert [(u, d) for u, d in keys] == [(f"5.{i}", at) for i in (0, 1, 2, 9)] + [("5.0", later.decided_at)]
    assert leads == ["+74950000009"]


async def test_upgrade_to_0002_keys_the_decisions_stored_before_it(store_url: str) -> None:
    """Decisions stored at least once before 0002 (a resent batch stored twice) keep one
    row each; their uniqueid comes from the trace."""
    from sqlalchemy import text

    await upgrade(store_url, "0001")
    engine = make_engine(store_url)
    try:
        async with engine.begin() as conn:
            for _ in range(2):
                await conn.execute(text(
                    "INSERT INTO route_decisions (pbx, linkedid, decided_at, trace) VALUES "
                    "('main', '1.1', '2026-11-22 17:51:43.125000', :trace)"), {"trace": '{"uniqueid": "1.1"}'})
    finally:
        await engine.dispose()
    await upgrade(store_url)
    async with Store(store_url) as s, s.engine.connect() as conn:
        rows = (await conn.execute(select(RouteDecisionRow.pbx, RouteDecisionRow.uniqueid))).all()
    assert [tuple(r) for r in rows] == [("main", "1.1")]


async def test_upgrade_to_0008_fills_last_answered_from_the_calls_stored_before_it(store_url: str) -> None:
    """The latest answered call per client id and per outside number, as the call writer
    would have kept it; unanswered calls and calls without a key count for nothing."""
    from sqlalchemy import insert

    from callrouter.store.schema import LastAnswered

    await upgrade(store_url, "0007")
    t0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
    rows = [  # (call_id, direction, outcome, client_id, peer_number, hours after t0)
        ("a", "in", "answered", "c1", "+79160000001", 0),
        ("b", "out", "answered", None, "+79160000001", 5),
        ("c", "in", "missed", "c1", "+79160000001", 9),
        ("d", "in", "answered", "c1", None, 3),
        ("e", "in", "answered", "c2", "+79160000002", 1),
    ]
    engine = make_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Call.__table__), [
                {"pbx": "main", "call_id": cid, "direction": d, "outcome": o, "client_id": cl, "peer_number": num,
                 "started_at": t0.replace(hour=9 + h), "complete": True, "record": {}}
                for cid, d, o, cl, num, h in rows])
    finally:
        await engine.dispose()
    await upgrade(store_url)
    t = LastAnswered.__table__
    async with Store(store_url) as s, s.engine.connect() as conn:
        got = {(k, key): at for k, key, at in await conn.execute(select(t.c.kind, t.c.key, t.c.started_at))}
    assert got == {("client", "c1"): t0.replace(hour=12), ("client", "c2"): t0.replace(hour=10),
                   ("number", "+79160000001"): t0.replace(hour=14), ("number", "+79160000002"): t0.replace(hour=10)}
