"""Routing rules: `rules/*.yaml` -> validated, compiled, immutable `Rules`; `RuleSet` holds the
running rules and reloads them (the daemon calls `reload` on SIGHUP) without ever dropping to "no rules".

Files are read in name order and merged: `rules:` lists are concatenated (first match
wins, across files too), `holidays`/`special_days` are merged, and every other key
(`timezone`, `business_hours`, `tiers`, `owner_dial`, `default_timeout`,
`display_name_max`) may be set in one file only. See rules/README.md and the shipped
rules for the format, documented by example.

Every problem is reported as `file: rule 'name': what` (`RulesError.problems`), all of
them at once, never only the first.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      field_validator, model_validator)

from callrouter.phone import DEFAULT_REGION, normalize

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ value types

# A Dial() string: one or more TECH/resource joined by '&'. No commas (they would become
# Dial() options), no quotes, spaces, '$' or braces (dialplan expressions).
_DIAL_PART = re.compile(r"[A-Za-z][A-Za-z0-9_-]*/[A-Za-z0-9@._:+#*=-]+")


def _check_dial(v: str) -> str:
    parts = v.split("&")
    if not v or len(v) > 256 or not all(_DIAL_PART.fullmatch(p) for p in parts):
        raise ValueError(f"{v!r} is not a Dial() string like PJSIP/101 or Local/retail@queues "
                         "(TECH/resource, several joined by &; no commas, spaces, quotes or $)")
    return v


DialString = Annotated[str, AfterValidator(_check_dial)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]
# ROUTE_REASON is machine-readable: words, ':' and '-' (the engine adds '→' for fallbacks)
Reason = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_:.-]*$", max_length=64)]
Timeout = Annotated[int, Field(ge=1, le=3600)]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _parse_ranges(v: Any) -> tuple[tuple[int, int], ...]:
    """'09:00-13:00, 14:00-18:00' (or a list of such) -> ((540, 780), (840, 1080)); 'closed' -> ()."""
    if isinstance(v, str):
        items = [s for s in v.split(",") if s.strip()]
    elif isinstance(v, list | tuple):
        items = list(v)
    else:
        raise ValueError(f"hours must be a string like '09:00-18:00' or 'closed' (got {v!r}; "
                         "quote times in YAML: 09:00 unquoted is the number 540)")
    if len(items) == 1 and isinstance(items[0], str) and items[0].strip().lower() == "closed":
        return ()
    out: list[tuple[int, int]] = []
    for item in items:
        m = _RANGE.match(item) if isinstance(item, str) else None
        if not m:
            raise ValueError(f"{item!r} is not a time range like '09:00-18:00'")
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or end > 24 * 60:
            raise ValueError(f"{item!r}: not a time of day")
        if end <= start:
            raise ValueError(f"{item!r}: the end must be after the start (split a range that "
                             "crosses midnight into two days)")
        out.append((start, end))
    out.sort()
    for (_, e1), (s2, _) in zip(out, out[1:]):
        if s2 < e1:
            raise ValueError(f"time ranges overlap in {v!r}")
    return tuple(out)


Ranges = tuple[tuple[int, int], ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ file models

class When(_Strict):
    """Conditions of a rule; all given ones must hold. None = not checked."""
    caller_in: tuple[str, ...] | None = None          # phone numbers, any form; normalized at load
    caller_id: Literal["present", "absent"] | None = None
    client: Literal["known", "unknown", "ambiguous"] | None = None
    blocked: bool | None = None
    problem: bool | None = None
    tier: tuple[Name, ...] | None = None
    hours: Literal["open", "closed"] | None = None

    @field_validator("caller_in", "tier", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Rule(_Strict):
    name: Name
    description: str | None = None
    enabled: bool = True
    when: When = When()
    # exactly one of: dial (a fixed destination) or to (owner / tier of the caller's client)
    dial: DialString | None = None
    to: Literal["owner", "tier"] | None = None
    timeout: Timeout | None = None
    # a second destination when the first does not answer: a Dial string, "tier", or none
    fallback: DialString | Literal["tier"] | None = None
    reason: Reason | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Rule:
        if (self.dial is None) == (self.to is None):
            raise ValueError("give exactly one of 'dial' (a Dial() string) or 'to' (owner or tier)")
        if self.to == "tier" and self.fallback == "tier":
            raise ValueError("'fallback: tier' on a 'to: tier' rule would ring the same desk twice")
        return self


class Tier(_Strict):
    name: Name
    min_turnover: float = Field(ge=0)
    dial: DialString
    timeout: Timeout | None = None
    description: str | None = None


class RulesFile(_Strict):
    """One YAML file; every key optional (see the module docstring for merging)."""
    timezone: str | None = None
    business_hours: dict[str, Ranges] | None = None
    holidays: tuple[date, ...] = ()
    special_days: dict[date, Ranges] = {}
    tiers: tuple[Tier, ...] | None = None
    owner_dial: str | None = None
    default_timeout: Timeout | None = None
    display_name_max: int | None = Field(default=None, ge=4, le=128)
    rules: tuple[Rule, ...] = ()

    @field_validator("business_hours", mode="before")
    @classmethod
    def _hours(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, dict):
            raise ValueError("business_hours maps days (mon, mon-fri, sat) to '09:00-18:00' or 'closed'")
        out: dict[str, Any] = {}
        for key, ranges in v.items():
            for day in _expand_days(str(key)):
                if day in out:
                    raise ValueError(f"day {day} is given twice")
                out[day] = _parse_ranges(ranges)
        return out

    @field_validator("special_days", mode="before")
    @classmethod
    def _special(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError("special_days maps dates (2026-12-31) to '09:00-15:00' or 'closed'")
        return {k: _parse_ranges(r) for k, r in v.items()}

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Moscow)") from None
        return v

    @field_validator("owner_dial")
    @classmethod
    def _owner_dial(cls, v: str | None) -> str | None:
        if v is not None:
            if v.count("{extension}") < 1:
                raise ValueError("owner_dial must contain {extension}, e.g. PJSIP/{extension}")
            _check_dial(v.replace("{extension}", "101"))
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: tuple[Tier, ...] | None) -> tuple[Tier, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("tiers: give at least one tier or leave the key out")
        mins = [t.min_turnover for t in v]
        if mins != sorted(mins) or len(set(mins)) != len(mins):
            raise ValueError("tiers must be listed by ascending min_turnover, each threshold once")
        if mins[0] != 0:
            raise ValueError("the first tier must start at min_turnover: 0 (every client needs a tier)")
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        return v


def _expand_days(key: str) -> list[str]:
    k = key.strip().lower()
    if k in _DAYS:
        return [k]
    a, sep, b = k.partition("-")
    if sep and a in _DAYS and b in _DAYS and _DAYS.index(a) <= _DAYS.index(b):
        return list(_DAYS[_DAYS.index(a):_DAYS.index(b) + 1])
    raise ValueError(f"{key!r} is not a day or a day range (mon, mon-fri, sat-sun)")


# ------------------------------------------------------------------ compiled rules

@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    file: str
    caller_in: frozenset[str] | None  # E.164


@dataclass(frozen=True)
class Rules:
    """Merged, validated, immutable rules: what the engine reads."""
    rules: tuple[CompiledRule, ...]
    tiers: tuple[Tier, ...] = ()
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    business_hours: dict[int, tuple[tuple[int, int], ...]] | None = None  # weekday 0=Mon
    holidays: frozenset[date] = frozenset()
    special_days: dict[date, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    owner_dial: str = "PJSIP/{extension}"
    default_timeout: int = 30
    display_name_max: int = 32
    files: tuple[str, ...] = ()
    # minute -> is_open(): the answer only changes at minute boundaries
    _open_cache: dict[Any, tuple[bool, str]] = field(default_factory=dict, compare=False, repr=False)

    def tier(self, name: str) -> Tier | None:
        for t in self.tiers:
            if t.name == name:
                return t
        return None

    def is_open(self, now: datetime) -> tuple[bool, str]:
        """Business hours at `now` (aware; naive means the rules' time zone), and why."""
        key = (int(now.timestamp() // 60) if now.tzinfo is not None
               else now.replace(second=0, microsecond=0))
        hit = self._open_cache.get(key)
        if hit is None:
            hit = self._is_open(now)
            if len(self._open_cache) > 256:
                self._open_cache.clear()
            self._open_cache[key] = hit
        return hit

    def _is_open(self, now: datetime) -> tuple[bool, str]:
        local = now.replace(tzinfo=self.timezone) if now.tzinfo is None else now.astimezone(self.timezone)
        d, minute = local.date(), local.hour * 60 + local.minute
        stamp = f"{local:%Y-%m-%d %a %H:%M} {self.timezone.key}"
        if self.business_hours is None:
            return True, f"{stamp}: no business hours configured"
        if d in self.special_days:
            ranges, what = self.special_days[d], "special day"
        elif d in self.holidays:
            return False, f"{stamp}: holiday"
        else:
            ranges, what = self.business_hours.get(local.weekday(), ()), "regular hours"
        if not ranges:
            return False, f"{stamp}: closed all day ({what})"
        for start, end in ranges:
            if start <= minute < end:
                return True, f"{stamp}: open ({what} {_fmt(start)}-{_fmt(end)})"
        shown = ", ".join(f"{_fmt(s)}-{_fmt(e)}" for s, e in ranges)
        return False, f"{stamp}: closed ({what} {shown})"


def _fmt(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# ------------------------------------------------------------------ loading

@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: rule {self.rule!r}" if self.rule else self.file
        # one line whatever the file holds: a key or value with a newline or a control
        # character (quoted in YAML) is shown escaped (found by fuzzing)
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], f"{where}: {self.message}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class RulesError(Exception):
    """Rules that cannot be used; `problems` lists every one found (file, rule, message)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, list | dict):
            continue  # unhashable: construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_timestamp(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> Any:
    # PyYAML resolves `2026-02-30` as a timestamp by its shape and then raises a bare
    # ValueError building it: made a YAML error with the position, like any other
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError) as e:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a date or time: {e}", node.start_mark) from None


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
# YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans,
# which turns a rule named `off` or a tier named `no` into False.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))

MAX_RULES_FILE = 1 << 20


def rule_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        raise RulesError([Problem(str(d), None, "rules directory not found")])
    return sorted([*d.glob("*.yaml"), *d.glob("*.yml")])


def _parse_file(path: Path, problems: list[Problem]) -> RulesFile | None:
    try:
        raw = path.read_bytes()
        if len(raw) > MAX_RULES_FILE:
            problems.append(Problem(str(path), None, f"file larger than {MAX_RULES_FILE} bytes"))
            return None
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except OSError as e:
        problems.append(Problem(str(path), None, f"cannot read: {e.strerror}"))
        return None
    except UnicodeDecodeError:
        problems.append(Problem(str(path), None, "not UTF-8 text"))
        return None
    except yaml.YAMLError as e:
        problems.append(Problem(str(path), None, f"not valid YAML: {e}".replace("\n", " ")))
        return None
    if data is None:
        return RulesFile()
    if not isinstance(data, dict):
        problems.append(Problem(str(path), None, "the file must be a mapping (timezone:, tiers:, rules: ...)"))
        return None
    try:
        return RulesFile.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            problems.append(_problem_of(path, data, err))
        return None


def _problem_of(path: Path, data: dict, err: dict[str, Any]) -> Problem:
    loc = list(err["loc"])
    rule = None
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        items = data.get("rules") or []
        item = items[loc[1]] if loc[1] < len(items) else None
        rule = str(item.get("name")) if isinstance(item, dict) and item.get("name") else f"#{loc[1] + 1}"
        loc = loc[2:]
    where = ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    text = f"{where}: {msg}" if where else msg
    if err.get("type") not in ("extra_forbidden", "missing") and "input" in err and not isinstance(
            err["input"], dict | list):
        text += f" (got {err['input']!r})"
    return Problem(str(path), rule, text[:400])


_SINGLE_KEYS = ("timezone", "business_hours", "tiers", "owner_dial", "default_timeout", "display_name_max")


def load_rules(directory: str | Path, region: str = DEFAULT_REGION) -> Rules:
    """Read, validate and compile every rules file in `directory`. Raises RulesError with
    every problem found; returns only rules that are entirely valid."""
    problems: list[Problem] = []
    files = rule_files(directory)
    parsed: list[tuple[Path, RulesFile]] = []
    for path in files:
        rf = _parse_file(path, problems)
        if rf is not None:
            parsed.append((path, rf))
    if not files:
        problems.append(Problem(str(directory), None, "no *.yaml rules files"))

    single: dict[str, tuple[Any, Path]] = {}
    holidays: set[date] = set()
    special: dict[date, tuple[tuple[int, int], ...]] = {}
    compiled: list[CompiledRule] = []
    names: dict[str, Path] = {}
    for path, rf in parsed:
        for key in _SINGLE_KEYS:
            value = getattr(rf, key)
            if value is None:
                continue
            if key in single:
                problems.append(Problem(str(path), None, f"{key} is already set in {single[key][1]}"))
            else:
                single[key] = (value, path)
        holidays.update(rf.holidays)
        for d, r in rf.special_days.items():
            if d in special:
                problems.append(Problem(str(path), None, f"special_days: {d} is given in two files"))
            special[d] = r
        for rule in rf.rules:
            if rule.name in names:
                problems.append(Problem(str(path), rule.name, f"rule name already used in {names[rule.name]}"))
            names[rule.name] = path
            caller_in = None
            if rule.when.caller_in is not None:
                numbers = set()
                for n in rule.when.caller_in:
                    e164 = normalize(n, region)
                    if e164 is None:
                        problems.append(Problem(str(path), rule.name,
                                                f"when.caller_in: {n!r} is not a valid phone number"))
                    else:
                        numbers.add(e164)
                caller_in = frozenset(numbers)
            if rule.enabled:
                compiled.append(CompiledRule(rule, str(path), caller_in))

    tiers: tuple[Tier, ...] = single.get("tiers", ((), None))[0]
    tier_names = {t.name for t in tiers}
    for c in compiled:
        r = c.rule
        needs_tiers = r.to == "tier" or r.fallback == "tier"
        if needs_tiers and not tiers:
            problems.append(Problem(c.file, r.name, "uses tiers but no file defines tiers"))
        for t in r.when.tier or ():
            if t not in tier_names:
                problems.append(Problem(c.file, r.name, f"when.tier: unknown tier {t!r}"))
        if r.when.hours is not None and "business_hours" not in single:
            problems.append(Problem(c.file, r.name, "when.hours needs business_hours (no file sets it)"))
    if parsed and not compiled and not problems:
        problems.append(Problem(str(directory), None, "no enabled rules"))
    if problems:
        raise RulesError(problems)

    def get(key: str, default: Any) -> Any:
        return single[key][0] if key in single else default

    hours = get("business_hours", None)
    return Rules(
        rules=tuple(compiled),
        tiers=tiers,
        timezone=ZoneInfo(get("timezone", "UTC")),
        business_hours=None if hours is None else {_DAYS.index(d): r for d, r in hours.items()},
        holidays=frozenset(holidays),
        special_days=special,
        owner_dial=get("owner_dial", "PJSIP/{extension}"),
        default_timeout=get("default_timeout", 30),
        display_name_max=get("display_name_max", 32),
        files=tuple(str(p) for p in files),
    )


def check_rules(directory: str | Path, region: str = DEFAULT_REGION) -> list[Problem]:
    """Every problem in the rules directory ([] when the rules are usable)."""
    try:
        load_rules(directory, region)
    except RulesError as e:
        return e.problems
    return []


# ------------------------------------------------------------------ the running rules

class RuleSet:
    """Holds the running `Rules`. `reload()` swaps in new rules only when every file is
    valid; otherwise the old rules keep running and the error is logged and kept in
    `last_error`. Readers take `ruleset.current` once per decision (an atomic reference)."""

    def __init__(self, directory: str | Path, region: str = DEFAULT_REGION, *, rules: Rules | None = None):
        self.directory = Path(directory)
        self.region = region
        self._rules = rules if rules is not None else load_rules(self.directory, region)
        self.version = 1
        self.last_error: RulesError | None = None

    @property
    def current(self) -> Rules:
        return self._rules

    def reload(self) -> bool:
        """True when new rules were loaded; False (old rules kept, error logged) otherwise."""
        # called on the daemon's event loop (SIGHUP): never two reloads at once
        try:
            new = load_rules(self.directory, self.region)
        except RulesError as e:
            self.last_error = e
            log.error("rules reload failed, keeping the previous rules (version %d): %s",
                      self.version, e)
            return False
        except Exception as e:  # noqa: BLE001 - a reload must never take the router down
            self.last_error = RulesError([Problem(str(self.directory), None, f"{type(e).__name__}: {e}")])
            log.exception("rules reload failed unexpectedly, keeping the previous rules")
            return False
        self._rules = new
        self.version += 1
        self.last_error = None
        log.info("rules reloaded from %s: %d rules (version %d)", self.directory, len(new.rules),
                 self.version)
        return True


__all__ = ["DialString", "Problem", "Rule", "Rules", "RulesError", "RulesFile", "RuleSet", "Tier", "When",
           "check_rules", "load_rules", "rule_files"]
