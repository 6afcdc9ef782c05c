"""Checks call records against a scenario's expect.json, key by key (see the recordings'
README for what each key means). Returns what differs; empty means right."""
from __future__ import annotations

from callrouter.records import CallRecord


def _digits(x: str | None) -> str:
    return "".join(c for c in (x or "") if c.isdigit())


def _legs(r: CallRecord, *results: str) -> list[str]:
    return sorted({str(leg.agent) for leg in r.legs if leg.result in results})


def differences(exp: dict, records: list[CallRecord]) -> list[str]:
    errs: list[str] = []
    if len(records) != exp["calls"]:
        return [f"{len(records)} records, expected {exp['calls']}"]
    if len({r.call_id for r in records}) != len(records):
        errs.append("duplicate call_id")
    incomplete = [r.call_id for r in records if not r.complete]
    if incomplete:
        errs.append(f"incomplete: {incomplete}")
    if exp["calls"] > 1:
        bad = [r.call_id for r in records if r.outcome != exp["outcome"]]
        return errs + ([f"outcome != {exp['outcome']} for {bad}"] if bad else [])
    r = records[0]

    def check(key: str, got, want) -> None:
        if got != want:
            errs.append(f"{key}: got {got!r}, expected {want!r}")

    simple = {"direction": r.direction, "outcome": r.outcome, "answered_by": r.answered_by,
              "final_agent": r.final_agent, "hangup_by": r.hangup_by, "via_queue": r.queue, "agent": r.agent}
    for key, got in simple.items():
        if key in exp:
            check(key, got, exp[key])
    if "caller" in exp:
        if exp["caller"] is None:
            check("caller", r.caller.number, None)
        else:
            check("caller", _digits(r.caller.number)[-10:], _digits(exp["caller"])[-10:])
    if "callee" in exp:
        check("callee", _digits(r.callee.number or r.callee.raw)[-10:], _digits(exp["callee"])[-10:])
    for key, results in (("missed_by", ("no-answer", "cancelled")), ("busy", ("busy",)),
                         ("unavailable", ("unavailable",)), ("also_rang", ("answered-elsewhere",))):
        if key in exp:
            check(key, _legs(r, *results), sorted(exp[key]))
    if "transferred_to" in exp:
        check("transferred_to", exp["transferred_to"] in [t.to for t in r.transfers], True)
    if "transfer" in exp:
        check("transfer", exp["transfer"] in [t.kind for t in r.transfers], True)
    for key, got in (("talk_s", r.talk_seconds), ("ring_s", r.ring_seconds)):
        if key in exp:
            lo, hi = exp[key]
            if got is None or not lo <= got <= hi:
                errs.append(f"{key}: {got} not in [{lo}, {hi}]")
    if "recording" in exp:
        check("recording", bool(r.recording), bool(exp["recording"]))
    if "routed" in exp:
        check("routed", r.route is not None, exp["routed"])
    if "client" in exp:
        check("client", r.client_id, exp["client"])
    return errs


def assert_names_who_answered(records) -> None:
    """Every complete answered record names who answered and who held the call last, and each
    answered leg names its party (issue 13); an outbound record names the manager who placed it."""
    for r in records:
        if not r.complete or r.outcome != "answered":
            continue
        assert r.answered_by or r.direction == "out", f"{r.call_id}: answered_by is null"
        assert r.final_agent, f"{r.call_id}: final_agent is null"
        if r.direction == "out":
            assert r.agent, f"{r.call_id}: outbound without the manager who placed it"
            continue
        for leg in r.legs:
            if leg.result == "answered":
                assert leg.agent, f"{r.call_id}: answered leg on {leg.device} names nobody"
