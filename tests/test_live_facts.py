"""The live facts a screen-pop follows, from real recordings: ringing, answered, ended."""
from pathlib import Path

from callrouter.ami.capture import read_events
from callrouter.tracker import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Tracker

RECORDINGS = Path(__file__).parent / "fixtures" / "asterisk"


def live(scenario: str) -> list[tuple[str, str, str]]:
    tracker = Tracker()
    out = []
    for event in read_events(RECORDINGS / f"{scenario}.ami.jsonl"):
        for f in tracker.feed(event):
            if isinstance(f, AgentRinging):
                out.append(("ringing", f.agent, f.caller.number or ""))
            elif isinstance(f, AgentAnswered):
                out.append(("answered", f.agent, f.caller.number or ""))
            elif isinstance(f, AgentEnded):
                out.append(("ended", f.agent, f.result))
            elif isinstance(f, CallFinished):
                out.append(("finished", f.record.answered_by or "", f.record.outcome))
    return out


def test_owner_answers():
    assert live("answered_owner") == [
        ("ringing", "101", "+79161234567"), ("answered", "101", "+79161234567"),
        ("ended", "101", "answered"), ("finished", "101", "answered")]


def test_ring_group_closes_the_losers_pop():
    facts = live("ring_group")
    assert facts[:2] == [("ringing", "106", "+79161234567"), ("ringing", "107", "+79161234567")]
    assert ("answered", "107", "+79161234567") in facts
    assert ("ended", "106", "cancelled") in facts  # the pop on 106 closes at once
    assert facts[-1] == ("finished", "107", "answered")


def test_busy_owner_then_queue():
    facts = live("owner_busy_fallback")
    assert ("ended", "103", "busy") in facts
    assert ("answered", "121", "+79161234567") in facts
    assert not any(kind == "answered" and agent == "103" for kind, agent, _ in facts)
