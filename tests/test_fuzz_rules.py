"""Fuzzing the rules loader (issue 14, item 6c): generated rule files (the real keys with
values of every YAML type), the shipped files mutated (lines dropped, duplicated and
swapped, characters replaced, garbage inserted) and plain garbage bytes. Each set of
files either loads (and then decides a call without failing) or raises RulesError whose
message is one line naming the file: never another exception from deep inside."""
from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from callrouter.routing.engine import decide
from callrouter.routing.rules import Rules, RulesError, load_rules
from callrouter.routing.types import ClientInfo
from fuzzing import fuzz

MONDAY_10 = datetime.fromisoformat("2026-11-23T10:00:00+03:00")
OWNED = ClientInfo(id="c-1", name="Ivan", owner_extension="101", monthly_turnover=120_000.0)
SHIPPED = Path(__file__).resolve().parents[1] / "rules"
SHIPPED_FILES = {p.name: p.read_bytes() for p in sorted(SHIPPED.glob("*.yaml"))}

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=True),
                   st.text(max_size=30), st.dates().map(str),
                   st.sampled_from(["09:00-18:00", "closed", "24:00-25:00", "18:00-09:00", "mon-fri", "sun-mon",
                                    "Europe/Moscow", "Mars/Olympus", "PJSIP/{extension}", "{", "{0}", "{extension!r}",
                                    "Local/x@y", "owner", "tier", "+7 916 123-45-67", "present", "unknown"]))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=12) | SCALAR.map(str), inner,
                                                                     max_size=4)), max_leaves=12)
RULE_KEYS = ["name", "when", "dial", "to", "timeout", "fallback", "reason", "description"]
WHEN_KEYS = ["caller_in", "caller_id", "client", "blocked", "problem", "tier", "hours"]
FILE_KEYS = ["timezone", "business_hours", "holidays", "special_days", "tiers", "owner_dial", "default_timeout",
             "display_name_max", "rules"]


@st.composite
def rule(draw) -> dict:
    r = draw(st.dictionaries(st.sampled_from(RULE_KEYS), VALUE, max_size=5))
    if draw(st.booleans()):
        r["when"] = draw(st.dictionaries(st.sampled_from(WHEN_KEYS), VALUE, max_size=3))
    return r


@st.composite
def rules_file(draw) -> bytes:
    data = draw(st.dictionaries(st.sampled_from(FILE_KEYS), VALUE, max_size=5))
    if draw(st.booleans()):
        data["rules"] = draw(st.lists(rule(), max_size=4))
    if draw(st.booleans()):
        data["tiers"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.text(max_size=8), "min_turnover": st.integers(-5, 10 ** 7) | SCALAR, "dial": SCALAR}),
            max_size=3))
    return yaml.safe_dump(data, allow_unicode=True).encode("utf-8")


@st.composite
def mutated_shipped(draw) -> dict[str, bytes]:
    files = dict(SHIPPED_FILES)
    name = draw(st.sampled_from(sorted(files)))
    lines = files[name].split(b"\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["drop", "duplicate", "swap", "garbage", "char"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "garbage":
            lines.insert(i, draw(st.binary(max_size=40) | st.text(max_size=40).map(
                lambda t: t.encode("utf-8", "surrogatepass"))))
        elif lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + draw(st.sampled_from([b":", b"-", b" ", b"{", b"[", b"'", b'"', b"*", b"&",
                                                            b"!", b"\t", b"%", b"\xff", b"0"])) + lines[i][k + 1:]
        if not lines:
            break
    files[name] = b"\n".join(lines)
    return files


def check(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        for name, content in files.items():
            (Path(d) / name).write_bytes(content)
        try:
            rules = load_rules(d)
        except RulesError as e:
            text = str(e)
            assert len(text.splitlines()) == 1 and "Traceback" not in text, text
            assert all(p.file.startswith(d) for p in e.problems)
            return
        assert isinstance(rules, Rules)
        # rules that load must route: a known client with an owner and an unknown caller
        for clients in (OWNED, None):
            decision = decide("+79161234567", clients, {}, MONDAY_10, rules)
            assert decision.dial


@fuzz(80)
@given(files=st.dictionaries(st.sampled_from(["a.yaml", "b.yml", "c.yaml"]), rules_file(), min_size=1, max_size=2))
def test_generated_rule_files_load_or_fail_in_one_line(files):
    check(files)


@fuzz(80)
@given(files=mutated_shipped())
def test_mutated_shipped_rules_load_or_fail_in_one_line(files):
    check(files)


@fuzz(30)
@given(content=st.binary(max_size=2000))
def test_garbage_bytes_fail_in_one_line(content):
    check({"x.yaml": content})


def test_the_shipped_rules_load():
    """The baseline the mutations start from."""
    check(SHIPPED_FILES)
    assert load_rules(SHIPPED).rules


# ------------------------------------------------------------------ what the fuzzing found

def test_a_key_with_a_newline_is_reported_on_one_line(tmp_path):
    """Found by fuzzing: a quoted YAML key holding newlines (an unknown key) put those
    newlines into the RulesError message, so `rules check` and the start printed several lines."""
    (tmp_path / "a.yaml").write_text("tiers:\n- ? '\n\n    x'\n  : null\nrules:\n  - {name: \"a\\u2028b\", dial: 5}\n")
    try:
        load_rules(tmp_path)
    except RulesError as e:
        assert len(str(e).splitlines()) == 1 and "unknown key" in str(e) and "\\n" in str(e), str(e)
    else:
        raise AssertionError("rules with an unknown key loaded")
