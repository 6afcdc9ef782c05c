"""The decision (pure): every path of the shipped rule set, first match wins, the trace."""
from datetime import datetime
from pathlib import Path

import pytest

from callrouter.routing.engine import FALLBACK_ARROW, decide, sanitize_display, tier_of
from callrouter.routing.rules import load_rules
from callrouter.routing.types import AgentStatus, ClientInfo

RULES = load_rules(Path(__file__).resolve().parents[1] / "rules")
OPEN = datetime.fromisoformat("2026-11-23T10:00:00+03:00")     # Monday, business hours
IVAN = ClientInfo("c-1001", "Ivan Petrov", owner_extension="101", monthly_turnover=120_000)
CALLER = "+79161234567"


def route(clients=IVAN, caller=CALLER, presence=None, now=OPEN, **kw):
    return decide(caller, clients, presence or {}, now, RULES, **kw)


def test_owner_available_gets_the_call_with_tier_fallback():
    d = route(presence={"101": AgentStatus("101", "idle", detail="PJSIP/101 NOT_INUSE")})
    assert (d.rule, d.reason, d.dial, d.timeout) == ("owner", "owner", "PJSIP/101", 15)
    assert d.fallback == "Local/wholesale@queues"
    assert (d.client_id, d.client_name, d.owner, d.lead) == ("c-1001", "Ivan Petrov", "101", False)
    assert d.variables() == [("ROUTE_DIAL", "PJSIP/101"), ("ROUTE_TIMEOUT", "15"),
                             ("ROUTE_FALLBACK", "Local/wholesale@queues"), ("CLIENT_ID", "c-1001"),
                             ("CLIENT_NAME", "Ivan Petrov"), ("ROUTE_REASON", "owner")]
    assert d.trace[-1].startswith("rule owner: MATCH")


def test_owner_with_unknown_presence_is_tried():
    d = route(presence={})
    assert d.reason == "owner" and "no presence seen" in d.trace[-1]


def test_owner_devices_from_config_ring_together():
    d = route(devices={"101": ("PJSIP/101", "PJSIP/101-soft")})
    assert d.dial == "PJSIP/101&PJSIP/101-soft"


@pytest.mark.parametrize("status, says", [
    (AgentStatus("101", "busy", detail="channel PJSIP/101-0000001 Up"), "busy"),
    (AgentStatus("101", "unavailable", detail="PJSIP/101 UNAVAILABLE"), "unavailable"),
    (AgentStatus("101", "idle", dnd=True), "DND"),
    (AgentStatus("101", "unknown", dnd=True), "DND"),
])
def test_owner_busy_unavailable_or_dnd_goes_to_the_tier(status, says):
    d = route(presence={"101": status})
    assert d.rule == "tier"
    assert d.reason == f"owner-unavailable{FALLBACK_ARROW}tier:wholesale" == "owner-unavailable→tier:wholesale"
    assert (d.dial, d.timeout, d.fallback) == ("Local/wholesale@queues", 40, "")
    assert d.client_id == "c-1001"
    assert any(line.startswith("rule owner: skipped") and says in line for line in d.trace)


@pytest.mark.parametrize("turnover, tier, dial", [
    (0, "retail", "Local/retail@queues"),
    (49_999.99, "retail", "Local/retail@queues"),
    (50_000, "wholesale", "Local/wholesale@queues"),
    (999_999, "wholesale", "Local/wholesale@queues"),
    (1_000_000, "key-accounts", "Local/key-accounts@queues"),
    (None, "retail", "Local/retail@queues"),
    (-5, "retail", "Local/retail@queues"),
])
def test_tiers_by_turnover_for_clients_without_owner(turnover, tier, dial):
    c = ClientInfo("c-7", "Shop", owner_extension=None, monthly_turnover=turnover)
    d = route(clients=[c])
    assert (d.rule, d.reason, d.dial) == ("tier", f"tier:{tier}", dial)
    assert d.timeout == (60 if tier == "key-accounts" else 40)


def test_tier_named_by_the_crm_wins_over_turnover_unknown_names_do_not():
    assert route(clients=ClientInfo("c", "x", monthly_turnover=10, tier="key-accounts")).reason == "tier:key-accounts"
    d = route(clients=ClientInfo("c", "x", monthly_turnover=60_000, tier="gold"))
    assert d.reason == "tier:wholesale" and "'gold' is not defined" in d.trace[-1]
    t, why = tier_of(ClientInfo("c", "x", monthly_turnover=2_000_000), RULES)
    assert t.name == "key-accounts" and "2,000,000" in why


def test_problem_client_goes_to_support_even_with_an_available_owner():
    d = route(clients=ClientInfo("c-9", "Trouble LLC", "101", 2_000_000, problem=True),
              presence={"101": AgentStatus("101", "idle")})
    assert (d.rule, d.reason, d.dial) == ("problem-client", "problem-client", "Local/support@queues")
    assert d.client_id == "c-9"


def test_blocked_client_and_blocklisted_number():
    d = route(clients=ClientInfo("c-6", "Spam", "101", 1, blocked=True))
    assert (d.rule, d.reason, d.dial) == ("blocked-client", "blocked", "Local/blocked@callrouter-targets")
    for raw_form in ("+79000000000",):
        d = route(clients=None, caller=raw_form)
        assert (d.rule, d.reason) == ("blocklist", "blocked")
        assert d.lead is True  # still an unknown number; the server records leads for those


def test_unknown_caller_goes_to_the_leads_desk_and_is_a_lead():
    d = route(clients=None, caller="+74951112233")
    assert (d.rule, d.reason, d.dial, d.timeout) == ("unknown-caller", "unknown-caller", "Local/leads@queues", 40)
    assert d.lead is True and d.client_id is None and d.client_name == ""
    assert d.trace[0] == "caller +74951112233: no client has this number"


def test_no_caller_id_is_unknown_but_not_a_lead():
    d = route(clients=(), caller=None, raw_caller="anonymous")
    assert d.reason == "unknown-caller" and d.lead is False
    assert "no caller ID" in d.trace[0]


@pytest.mark.parametrize("when", [
    "2026-11-22T12:00:00+03:00",   # Sunday
    "2026-11-23T19:30:00+03:00",   # Monday evening
    "2026-11-23T16:30:00+00:00",   # the same instant in UTC
    "2026-11-04T12:00:00+03:00",   # holiday
])
def test_after_hours(when):
    d = route(now=datetime.fromisoformat(when), presence={"101": AgentStatus("101", "idle")})
    assert (d.rule, d.reason, d.dial) == ("after-hours", "after-hours", "Local/after-hours@callrouter-targets")
    assert d.client_id == "c-1001"  # the display still shows who calls


def test_after_hours_unknown_caller_is_still_a_lead():
    d = route(clients=None, caller="+74951112233", now=datetime.fromisoformat("2026-11-22T12:00:00+03:00"))
    assert d.reason == "after-hours" and d.lead is True


def test_blocklist_beats_after_hours():
    d = route(clients=ClientInfo("c-6", "Spam", blocked=True), now=datetime.fromisoformat("2026-11-22T12:00+03:00"))
    assert d.rule == "blocked-client"


def test_a_phone_on_two_clients_is_reported_not_resolved():
    a = ClientInfo("c-1", "Alpha", "101", 10)
    b = ClientInfo("c-2", "Beta", "102", 5_000_000)
    d = route(clients=[a, b], presence={"101": AgentStatus("101", "idle")})
    assert (d.rule, d.reason, d.dial) == ("shared-number", "ambiguous-caller", "Local/support@queues")
    assert d.ambiguous and d.candidates == ("c-1", "c-2")
    assert d.client_id is None and d.client_name == "2 clients"
    assert "AMBIGUOUS" in d.trace[0] and d.lead is False


def test_ambiguous_without_a_rule_for_it_never_guesses(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "tiers:\n  - {name: retail, min_turnover: 0, dial: Local/retail@queues}\n"
        "rules:\n  - {name: problem, when: {problem: true}, dial: Local/support@queues}\n"
        "  - {name: owner, to: owner, fallback: tier}\n  - {name: tier, to: tier}\n")
    rules = load_rules(tmp_path)
    d = decide(CALLER, [ClientInfo("a", "A", "101", problem=True), ClientInfo("b", "B", "102")], {}, OPEN, rules,
               default_dial="Local/operator@queues", default_timeout=25)
    assert (d.rule, d.reason, d.dial, d.timeout) == ("", "no-rule", "Local/operator@queues", 25)
    assert d.candidates == ("a", "b")


def test_first_match_wins_and_the_trace_explains_every_rule():
    d = route(presence={"101": AgentStatus("101", "busy", detail="PJSIP/101 INUSE")})
    names = [line.split(":")[0] for line in d.trace[1:]]
    assert names == ["rule blocklist", "rule blocked-client", "rule after-hours", "rule problem-client",
                     "rule shared-number", "rule unknown-caller", "rule owner", "rule tier"]
    assert "open (regular hours 09:00-19:00)" in d.trace[3]
    assert "turnover 120,000 ≥ 50,000: tier wholesale" in d.trace[-1]


def test_owner_rule_custom_fallback_and_owner_dial(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "owner_dial: 'Local/{extension}@phones'\n"
        "rules:\n  - {name: own, to: owner, timeout: 10, fallback: 'Local/121@phones'}\n"
        "  - {name: rest, dial: Local/support@queues}\n")
    rules = load_rules(tmp_path)
    d = decide(CALLER, IVAN, {}, OPEN, rules)
    assert (d.dial, d.timeout, d.fallback) == ("Local/101@phones", 10, "Local/121@phones")
    bad = ClientInfo("c", "x", owner_extension="101,tT")  # never lands in a Dial() string
    d = decide(CALLER, bad, {}, OPEN, rules)
    assert d.rule == "rest" and "not dialable" in d.trace[1]


def test_client_name_is_sanitized_for_phone_displays():
    nasty = ClientInfo("c-1", 'Иван "Петров"\n\u202eSET VARIABLE X ${EVIL}, ООО; |Рога| и Копыта — очень длинное имя')
    d = route(clients=nasty)
    assert d.client_name == "Иван Петров SET VARIABLE X EVIL"
    assert len(d.client_name) <= RULES.display_name_max
    assert sanitize_display("\x00\x07  Ann\t\tLee  ") == "Ann Lee"
    assert sanitize_display(None) == ""
    assert sanitize_display("e\u0301") == "\u00e9"  # NFC


def test_decision_is_frozen_and_serializable():
    d = route()
    with pytest.raises(AttributeError):
        d.dial = "x"  # type: ignore[misc]
    as_dict = d.to_dict()
    assert as_dict["rule"] == "owner" and isinstance(as_dict["trace"], list)
