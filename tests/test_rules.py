"""Rules files: the shipped set loads; every kind of mistake is reported with file, rule
and problem; a bad reload keeps the running rules (also on a real SIGHUP); `rules check`."""
import asyncio
import logging
import os
import shutil
import signal
from datetime import date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from callrouter.cli.routing import rules as rules_cli
from callrouter.daemon import install_signals
from callrouter.routing.rules import RulesError, RuleSet, check_rules, load_rules

SHIPPED = Path(__file__).resolve().parents[1] / "rules"

MINIMAL = """
tiers:
  - {name: retail, min_turnover: 0, dial: Local/retail@queues}
rules:
  - name: tier
    to: tier
"""


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


def problems_of(d: Path) -> list[str]:
    return [str(p) for p in check_rules(d)]


def test_shipped_rules_load_and_are_ordered():
    r = load_rules(SHIPPED)
    assert [c.rule.name for c in r.rules] == ["blocklist", "blocked-client", "after-hours", "problem-client",
                                              "shared-number", "unknown-caller", "owner", "tier"]
    assert [(t.name, t.min_turnover) for t in r.tiers] == [("retail", 0), ("wholesale", 50_000),
                                                            ("key-accounts", 1_000_000)]
    assert r.timezone.key == "Europe/Moscow"
    assert date(2026, 11, 4) in r.holidays
    assert r.rules[0].caller_in == frozenset({"+79000000000"})  # normalized at load


def test_files_merge_in_name_order(tmp_path):
    write(tmp_path, "10-b.yaml", "rules:\n  - {name: second, dial: Local/b@queues}\n")
    write(tmp_path, "05-a.yaml", "rules:\n  - {name: first, dial: Local/a@queues}\n")
    write(tmp_path, "20-c.yaml", "rules:\n  - {name: off, dial: Local/c@queues, enabled: false}\n")
    r = load_rules(tmp_path)
    assert [c.rule.name for c in r.rules] == ["first", "second"]


@pytest.mark.parametrize("text, expected", [
    ("rules: [\n  - name: x\n", "not valid YAML"),
    ("holidays:\n  - 2026-02-30\n", "'2026-02-30' is not a date or time: day is out of range"),
    ("holidays: [0000-01-01]\n", "'0000-01-01' is not a date or time"),
    ("- just\n- a list\n", "must be a mapping"),
    ("rules:\n  - {name: x, dial: Local/a@queues, colour: red}\n", "rule 'x': colour: unknown key"),
    ("rules:\n  - {name: x, dial: 'Local/a@queues,20,tT'}\n", "rule 'x': dial:"),
    ("rules:\n  - {name: x, dial: 'PJSIP/101 ; Hangup'}\n", "is not a Dial() string"),
    ("rules:\n  - {name: x}\n", "rule 'x': give exactly one of 'dial'"),
    ("rules:\n  - {name: x, dial: Local/a@q, to: owner}\n", "give exactly one"),
    ("rules:\n  - {name: x, to: boss}\n", "rule 'x': to:"),
    ("rules:\n  - {name: x, dial: Local/a@q, timeout: 0}\n", "rule 'x': timeout"),
    ("rules:\n  - {name: Bad Name, dial: Local/a@q}\n", "rule 'Bad Name': name"),
    ("rules:\n  - {dial: Local/a@q}\n", "rule '#1': name: Field required"),
    ("rules:\n  - {name: x, dial: Local/a@q, when: {hours: lunch}}\n", "rule 'x': when.hours"),
    ("rules:\n  - {name: x, dial: Local/a@q, when: {caller_in: [hello]}}\n", "'hello' is not a valid phone"),
    ("rules:\n  - {name: x, dial: Local/a@q, when: {hours: closed}}\n", "needs business_hours"),
    ("rules:\n  - {name: x, to: tier}\n", "no file defines tiers"),
    ("timezone: Mars/Olympus\nrules:\n  - {name: x, dial: Local/a@q}\n", "unknown time zone"),
    ("business_hours: {mon: 9:00}\nrules:\n  - {name: x, dial: Local/a@q}\n", "quote times"),
    ("business_hours: {mon: '9 to 5'}\nrules:\n  - {name: x, dial: Local/a@q}\n", "not a time range"),
    ("business_hours: {mon: '18:00-09:00'}\nrules:\n  - {name: x, dial: Local/a@q}\n", "end must be after"),
    ("business_hours: {funday: '09:00-18:00'}\nrules:\n  - {name: x, dial: Local/a@q}\n", "not a day"),
    ("business_hours: {mon-fri: '09:00-18:00', wed: closed}\nrules:\n  - {name: x, dial: Local/a@q}\n",
     "given twice"),
    ("tiers:\n  - {name: a, min_turnover: 100, dial: Local/a@q}\nrules:\n  - {name: x, to: tier}\n",
     "min_turnover: 0"),
    ("tiers:\n  - {name: a, min_turnover: 0, dial: Local/a@q}\n  - {name: b, min_turnover: 0, dial: Local/b@q}\n"
     "rules:\n  - {name: x, to: tier}\n", "ascending"),
    (MINIMAL + "  - {name: y, dial: Local/a@q, when: {tier: [platinum]}}\n", "unknown tier 'platinum'"),
    ("rules:\n  - {name: x, dial: Local/a@q}\n  - {name: x, dial: Local/b@q}\n", "rule 'x': rule name already"),
    ("rules:\n  - name: x\n    dial: Local/a@q\n    dial: Local/b@q\n", "duplicate key 'dial'"),
    ("owner_dial: PJSIP/101\nrules:\n  - {name: x, dial: Local/a@q}\n", "must contain {extension}"),
    ("", "no enabled rules"),
])
def test_each_problem_is_reported_with_file_and_rule(tmp_path, text, expected):
    f = write(tmp_path, "routes.yaml", text)
    found = problems_of(tmp_path)
    assert found, "expected a problem"
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(f)) or p.startswith(str(tmp_path)) for p in found)


def test_all_problems_at_once_and_across_files(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL + "  - {name: dup, dial: Local/a@q}\n")
    write(tmp_path, "b.yaml", "tiers:\n  - {name: r, min_turnover: 0, dial: Local/r@q}\n"
                              "rules:\n  - {name: dup, dial: Local/a@q}\n")
    write(tmp_path, "c.yaml", "rules:\n  - {name: worse, dial: 'a b'}\n  - {name: worst, timeout: -1}\n")
    found = problems_of(tmp_path)
    assert any("b.yaml: tiers is already set in" in p and "a.yaml" in p for p in found), found
    assert any("b.yaml: rule 'dup': rule name already used in" in p for p in found), found
    assert any("c.yaml: rule 'worse': dial" in p for p in found), found
    assert any("c.yaml: rule 'worst': timeout" in p for p in found), found


def test_yaml_1_1_booleans_are_plain_words(tmp_path):
    write(tmp_path, "r.yaml", "rules:\n  - {name: off, dial: Local/a@q, enabled: true}\n"
                              "  - {name: no, dial: Local/b@q, enabled: false}\n")
    assert [c.rule.name for c in load_rules(tmp_path).rules] == ["off"]


def test_missing_directory(tmp_path):
    with pytest.raises(RulesError) as e:
        load_rules(tmp_path / "nope")
    assert "rules directory not found" in str(e.value)


def test_business_hours_are_timezone_aware():
    r = load_rules(SHIPPED)  # Europe/Moscow, mon-fri 09:00-19:00, sat 10-16
    assert r.is_open(datetime.fromisoformat("2026-11-23T15:59:00+00:00"))[0]      # Mon 18:59 MSK
    assert not r.is_open(datetime.fromisoformat("2026-11-23T16:00:00+00:00"))[0]  # Mon 19:00 MSK
    assert not r.is_open(datetime.fromisoformat("2026-11-23T05:59:00+00:00"))[0]  # Mon 08:59 MSK
    assert r.is_open(datetime.fromisoformat("2026-11-23T09:00"))[0]               # naive = rules' zone
    assert not r.is_open(datetime.fromisoformat("2026-11-22T12:00+03:00"))[0]     # Sunday
    assert r.is_open(datetime.fromisoformat("2026-11-21T12:00+03:00"))[0]         # Saturday 10-16
    open_, why = r.is_open(datetime.fromisoformat("2026-11-04T12:00+03:00"))
    assert not open_ and "holiday" in why
    # special day beats the weekly hours
    assert not r.is_open(datetime.fromisoformat("2026-12-30T17:30+03:00"))[0]
    assert r.is_open(datetime.fromisoformat("2026-12-29T17:30+03:00"))[0]


# ------------------------------------------------------------------ hot reload

def test_reload_with_a_broken_file_keeps_the_old_rules(tmp_path, caplog):
    f = write(tmp_path, "routes.yaml", MINIMAL)
    rs = RuleSet(tmp_path)
    old = rs.current
    f.write_text(MINIMAL + "  - {name: broken, dial: 'no good'}\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="callrouter.routing.rules"):
        assert rs.reload() is False
    assert rs.current is old and rs.version == 1
    assert rs.last_error is not None and "rule 'broken'" in str(rs.last_error)
    assert any("keeping the previous rules" in r.message and "broken" in r.message for r in caplog.records)

    write(tmp_path, "zz-garbage.yaml", "{{{{")
    assert rs.reload() is False and rs.current is old

    (tmp_path / "zz-garbage.yaml").unlink()
    f.write_text(MINIMAL + "  - {name: added, dial: Local/x@queues}\n", encoding="utf-8")
    assert rs.reload() is True
    assert [c.rule.name for c in rs.current.rules] == ["tier", "added"]
    assert rs.version == 2 and rs.last_error is None


def test_reload_when_the_directory_disappears(tmp_path):
    d = tmp_path / "rules"
    shutil.copytree(SHIPPED, d, ignore=shutil.ignore_patterns("*.md"))
    rs = RuleSet(d)
    old = rs.current
    shutil.rmtree(d)
    assert rs.reload() is False and rs.current is old


async def test_sighup_reloads_and_a_broken_file_keeps_the_old_rules(tmp_path):
    f = write(tmp_path, "routes.yaml", MINIMAL)
    rs = RuleSet(tmp_path)
    loop = asyncio.get_running_loop()
    hooked = asyncio.Event()
    install_signals(loop, asyncio.Event(), lambda: (rs.reload(), hooked.set()))
    try:
        f.write_text(MINIMAL + "  - {name: added, dial: Local/x@queues}\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(hooked.wait(), 5)
        assert [c.rule.name for c in rs.current.rules] == ["tier", "added"]
        good = rs.current

        hooked.clear()
        f.write_text("rules:\n  - {name: tier, to: nowhere}\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(hooked.wait(), 5)
        assert rs.current is good
        assert "rule 'tier'" in str(rs.last_error)
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# ------------------------------------------------------------------ rules check

def test_rules_check_ok():
    res = CliRunner().invoke(rules_cli, ["check", str(SHIPPED)])
    assert res.exit_code == 0, res.output
    assert "OK: 8 rules" in res.output


def test_rules_check_reports_file_rule_problem_and_fails(tmp_path):
    f = write(tmp_path, "routes.yaml", MINIMAL + "  - {name: vip, dial: 'Local/vip@queues,5'}\n")
    res = CliRunner().invoke(rules_cli, ["check", str(tmp_path)])
    assert res.exit_code == 1
    assert f"{f}: rule 'vip': dial:" in res.output
    assert "1 problem(s)" in res.output


def test_rules_check_uses_the_config_rules_dir(tmp_path):
    d = tmp_path / "myrules"
    d.mkdir()
    write(d, "r.yaml", MINIMAL)
    cfg = write(tmp_path, "callrouter.toml", f'rules_dir = "{d}"\n')
    res = CliRunner().invoke(rules_cli, ["check", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "OK: 1 rules" in res.output
