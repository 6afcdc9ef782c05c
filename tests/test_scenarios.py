"""Every recorded scenario, the way the daemon sees it: the recording is served by a fake
AMI server over real TCP, read by panoramisk (AmiSource), reduced by the tracker, written
by the store writer, then read back from the store and checked against expect.json."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from callrouter.ami.client import AmiSource
from callrouter.calllog.reporters import RecordCollector
from callrouter.calllog.storing import RecordWriter
from callrouter.calllog.walk import CallLog, follow
from callrouter.config import PbxConfig
from callrouter.records import CallRecord
from callrouter.store import Store
from callrouter.tracker import Tracker
from expectations import assert_names_who_answered, differences
from fakeami import FakeAmi, load_recording

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
SCENARIOS = sorted(p.name[: -len(".expect.json")] for p in RECORDINGS.glob("*.expect.json"))


async def run_through_daemon_path(frames: list[str], store: Store) -> list[CallRecord]:
    seen = RecordCollector()  # which calls finished, to read them back from the store
    writer = RecordWriter(store)
    calllog = CallLog(Tracker("main"), [writer, seen])
    async with FakeAmi(frames) as ami:
        cfg = PbxConfig(name="main", host="127.0.0.1", port=ami.port, username="callrouter",
                        secret="s3cret", reconnect_min=0.05, reconnect_max=0.2)
        async with asyncio.TaskGroup() as tg:
            writing = tg.create_task(writer.run())
            async with AmiSource(cfg) as source:
                async def close_when_served() -> None:
                    # every frame of the recording read (answers to our own actions - Login,
                    # the on-login snapshot - not counted); then closing loses nothing
                    while source.stats.frames - source.stats.responses + source.stats.oversized < len(frames):
                        await asyncio.sleep(0.01)
                    await source.aclose()
                tg.create_task(close_when_served())
                await follow(source.events(), calllog)
            calllog.close("capture ended")
            await writer.close()
            await writing
    assert writer.saved == len(seen.records)
    stored = [await store.get_call("main", r.call_id) for r in seen.records]
    assert stored == seen.records  # what the store gives back is what the tracker made
    assert await store.count_calls("main") == len(seen.records)
    assert_names_who_answered(stored)
    return stored


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_scenario(scenario: str, store: Store) -> None:
    expect = json.loads((RECORDINGS / f"{scenario}.expect.json").read_text())
    records = await asyncio.wait_for(
        run_through_daemon_path(load_recording(RECORDINGS / f"{scenario}.ami.jsonl"), store), 30)
    assert differences(expect, records) == []


async def test_replaying_twice_writes_each_call_once(store: Store) -> None:
    frames = load_recording(RECORDINGS / "burst.ami.jsonl")
    first = await run_through_daemon_path(frames, store)
    second = await run_through_daemon_path(frames, store)
    assert len(first) == len(second) == 40
    assert await store.count_calls() == 40


JUNK = {
    "malformed frame": "this is not\r\nan AMI: frame at all\x00\xff\r\n\r\n",
    "unknown event": "Event: SomethingNewInAsterisk42\r\nPrivilege: call,all\r\nFoo: bar\r\n\r\n",
    "missing fields": "Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/101-000000aa\r\nCause: 16\r\n\r\n",
    "10 MB header line": "Event: VarSet\r\nValue: " + "x" * (10 * 1024 * 1024) + "\r\n\r\n",
}


@pytest.mark.parametrize("junk", sorted(JUNK))
async def test_bad_input_is_skipped_and_every_call_still_logged(junk: str, store: Store) -> None:
    """The burst (40 calls at once) with one bad frame in the middle of it: the connection
    stays up and all 40 calls come out right."""
    frames = load_recording(RECORDINGS / "burst.ami.jsonl")
    middle = len(frames) // 2
    frames = frames[:middle] + [JUNK[junk]] + frames[middle:]
    records = await asyncio.wait_for(run_through_daemon_path(frames, store), 60)
    expect = json.loads((RECORDINGS / "burst.expect.json").read_text())
    assert differences(expect, records) == []
