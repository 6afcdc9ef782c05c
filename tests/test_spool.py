"""The spool (callrouter.store.spool) and the poison path, against the real databases:
what the database does not take is kept on disk, bounded, replayed in order and stored
once; what it refuses is a dead letter an admin can list; nothing waits behind it."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from callrouter.calllog.storing import RecordWriter
from callrouter.cli import main as cli
from callrouter.records import CallRecord
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.store.schema import Call, Lead, RouteDecisionRow
from callrouter.store.spool import (DECISION, RECORD, Spool, SpoolDrain, decode_decision, encode_decision,
                                    encode_record)
from callrouter.tracker import CallFinished
from test_store import record

T0 = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def routed(n: int, *, lead: bool = False) -> RoutedCall:
    caller = f"+7495000{n:04d}"
    d = RouteDecision(rule="unknown-caller" if lead else "owner", reason="unknown-caller" if lead else "owner",
                      dial="Local/leads@queues" if lead else "PJSIP/101", timeout=20, caller=caller, lead=lead,
                      client_id=None if lead else "c-1")
    return RoutedCall("main", f"1795370000.{n}", f"1795370000.{n}", "PJSIP/trunk-1", caller[1:], d,
                      T0 + timedelta(seconds=n), 0.3, 0.5, "answered")


async def count(store, table) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))


def test_items_are_kept_in_order_per_kind_and_forgotten_once_stored(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    assert spool.put(RECORD, [b"r1", b"r2"]) == 2 and spool.put(DECISION, [b"d1"]) == 1
    spool.put(RECORD, [b"r3"])
    assert [p for _, p in spool.peek(RECORD, 10)] == [b"r1", b"r2", b"r3"]
    assert spool.depth() == 4 and spool.depth(RECORD) == 3 and spool.size() == 8
    seqs = [s for s, _ in spool.peek(RECORD, 2)]
    spool.delete(RECORD, seqs)
    assert [p for _, p in spool.peek(RECORD, 10)] == [b"r3"] and spool.depth() == 2 and spool.size() == 4
    assert oct(os.stat(tmp_path / "spool.db").st_mode & 0o777) == "0o600"
    spool.close()
    again = Spool(tmp_path / "spool.db")  # a restart finds them
    assert again.depth(DECISION) == 1 and again.has(RECORD)
    again.close()


def test_a_full_spool_refuses_counts_and_says_so(tmp_path, caplog):
    spool = Spool(tmp_path / "spool.db", max_bytes=1024)
    with caplog.at_level(logging.ERROR, logger="callrouter.store.spool"):
        assert spool.put(RECORD, [b"x" * 400, b"y" * 400, b"z" * 400]) == 2
    assert spool.stats["refused"] == 1 and spool.depth() == 2
    assert "is full" in caplog.text and "1 record(s) refused and NOT STORED ANYWHERE" in caplog.text
    spool.close()


def test_what_a_put_acknowledged_survives_a_sigkill(tmp_path):
    """A process puts items, says so, and is killed at once: they are on disk."""
    path = tmp_path / "spool.db"
    code = ("import os, sys, signal\n"
            "from callrouter.store.spool import Spool\n"
            f"s = Spool({str(path)!r})\n"
            "for n in range(50):\n"
            "    s.put('record', [b'item %d' % n])\n"
            "    print(n, flush=True)\n"
            "    if n == 49: os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acknowledged = len(proc.stdout.split())
    spool = Spool(path)
    assert acknowledged == 50 and [p for _, p in spool.peek(RECORD, 100)] == [b"item %d" % n for n in range(50)]
    spool.close()


async def test_the_drain_replays_everything_once_even_what_was_already_stored(store, tmp_path):
    """As after a crash between a commit and the spool's delete: some items are in the
    database already, some spooled twice. After the drain each is stored once."""
    spool = Spool(tmp_path / "spool.db")
    records = [record(call_id=f"1795370100.{n}") for n in range(5)]
    calls = [routed(n, lead=n % 2 == 0) for n in range(6)]
    await store.save_calls(records[:2])
    await store.save_routing_batch(calls[:3])
    spool.put(RECORD, [encode_record(r) for r in records])
    spool.put(DECISION, [encode_decision(c) for c in calls + calls[4:]])
    assert decode_decision(encode_decision(calls[0])) == calls[0]
    drain = SpoolDrain(spool, store, poll=0.05)
    draining = asyncio.create_task(drain.run())
    for _ in range(200):
        if spool.depth() == 0:
            break
        await asyncio.sleep(0.05)
    draining.cancel()
    assert spool.depth() == 0
    assert await count(store, Call) == 5 and await count(store, RouteDecisionRow) == 6
    assert await count(store, Lead) == 3
    assert drain.stats["record-drained"] == 5 and drain.stats["decision-drained"] == 8
    spool.close()


async def test_a_record_the_database_refuses_is_a_dead_letter_and_the_others_are_stored(store, store_url, tmp_path):
    """Records built past the edge (a NUL kept, a lone surrogate): PostgreSQL refuses the
    NUL, both refuse the surrogate. Each such record is kept as a dead letter with the
    error, every other record of the batch is stored, and the writer goes on."""
    good = [record(call_id=f"1795370200.{n}") for n in range(8)]
    nul = CallRecord.model_validate({**good[0].to_dict(), "call_id": "1795370200.90",
                                     "caller": {"number": None, "raw": "8916", "name": "Ivan\x00Petrov"}})
    surrogate = CallRecord.model_validate({**good[0].to_dict(), "call_id": "1795370200.91",
                                           "callee": {"number": None, "raw": "1\udc80", "name": None}})
    writer = RecordWriter(store)
    writing = asyncio.create_task(writer.run())
    for r in [*good[:4], nul, surrogate, *good[4:]]:
        writer.offer(CallFinished(r))
    await asyncio.wait_for(writer.flush(), 30)
    after = record(call_id="1795370200.99")
    writer.offer(CallFinished(after))
    await asyncio.wait_for(writer.flush(), 30)
    await writer.close(5)
    await asyncio.wait_for(writing, 5)
    refused = {"postgresql": {"main/1795370200.90", "main/1795370200.91"}, "sqlite": {"main/1795370200.91"}}
    expected_dead = refused[store.engine.dialect.name]
    letters = await store.dead_letters()
    assert {d.key for d in letters} == expected_dead
    assert await store.count_calls() == 8 + 1 + (2 - len(expected_dead))
    assert writer.stats["dead"] == len(expected_dead)
    surrogate_letter = next(d for d in letters if d.key.endswith(".91"))
    assert "\\udc80" in surrogate_letter.payload and surrogate_letter.error

    result = await asyncio.to_thread(CliRunner().invoke, cli, ["deadletters", "list", "--payload"],
                                     env={"CALLROUTER_DATABASE_URL": store_url})  # the admin's view
    assert result.exit_code == 0, result.output
    assert "main/1795370200.91" in result.output and "record" in result.output
