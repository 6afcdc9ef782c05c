"""The lab recordings as an AMI user with a narrower eventfilter would see them: without
HangupRequest/SoftHangupRequest (main/manager_channels.c publishes them; `eventfilter =
!Event: .*HangupRequest` drops them), and also without Newstate and VarSet. The records must
say the same; `hangup_by` may only become null where the remaining evidence does not decide
(never a different party). Without VarSet the router's variables and the recording file are
unknown, so those keys are not compared there."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from callrouter.ami.capture import read_events
from callrouter.ami.events import HangupRequest, Newstate, VarSet
from callrouter.calllog.walk import replay_records as replay
from expectations import assert_names_who_answered, differences

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"
SCENARIOS = sorted(p.name[: -len(".expect.json")] for p in RECORDINGS.glob("*.expect.json"))
FILTERS = {"no hangup requests": (HangupRequest,), "no requests, Newstate, VarSet": (HangupRequest, Newstate, VarSet)}


@pytest.mark.parametrize("drop", sorted(FILTERS))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recording_through_a_narrow_eventfilter(scenario: str, drop: str) -> None:
    events = list(read_events(RECORDINGS / f"{scenario}.ami.jsonl"))
    full = replay(events)
    narrow = replay([e for e in events if not isinstance(e, FILTERS[drop])])
    expect = json.loads((RECORDINGS / f"{scenario}.expect.json").read_text())
    expect.pop("hangup_by", None)
    if VarSet in FILTERS[drop]:
        for key in ("recording", "routed", "client"):
            expect.pop(key, None)
    assert differences(expect, narrow) == []
    assert_names_who_answered(narrow)
    for a, b in zip(full, narrow, strict=True):
        assert b.hangup_by in (a.hangup_by, None)
        assert (b.outcome, b.answered_by, b.final_agent, b.direction) == \
            (a.outcome, a.answered_by, a.final_agent, a.direction)
